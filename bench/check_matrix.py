#!/usr/bin/env python3
"""Measures `testbed check` on a matrix of 100 x 100 pod pairs over TCP.

The testbed: 100 pods spread evenly over 20 nodes (udp overlay unless
`--overlay`), each running a TCP listener on port 7070 that accepts and
closes connections (`ready: {tcp: 7070}`), written to a private temporary
directory. The check, in a checks file beside it:

    matrix: {from: {allPods: true}, to: {allPods: true}, port: tcp/7070}

(10,000 probes, self included). Measured:

1. `testbed check NAME --checks FILE --json`: wall time of the whole
   command (reading the plan, resolving, 10,000 TCP connections from inside
   the pods' namespaces, printing), median of 3 runs after one warm-up run;
   every cell must be reachable.
2. The reference: one `testbed exec -t NAME POD -- nc -z -w1 ADDR 7070`
   per pair (or, where no `nc` is installed, `timeout 1 bash -c
   'exec 3<>/dev/tcp/ADDR/7070'`, the same test without a new program),
   one after the other, on a seeded random sample of 200 pairs, and
   extrapolated to 10,000 (the table says so).

Why 20 nodes: pods on one node reach each other over their bridge and each
needs a neighbour (ARP) entry per peer on its node, and the kernel keeps
one neighbour table for all namespaces together (`gc_thresh3`, 1,024
entries, settable only in the root namespace, which the benchmark does not
touch): 100 pods on 2 nodes would need 5,000 entries and lose connections
to "neighbor table overflow". 20 nodes of 5 pods need about 980 (pods 500,
bridges 100, nodes' LAN peers 380). The kernel's count of table overflows
(/proc/net/stat/arp_cache) during the runs is printed: it must be 0 for
the numbers to mean anything.

Run as root from the repository after `cargo build --release`:

    python3 bench/check_matrix.py [--bin target/release/testbed] [--pods 100] [--nodes 20] [--overlay udp] [--sample 200] [--profile]

`--profile` records the last matrix run with `perf record -g` and prints
the top of `perf report`. Target (issue 11): the matrix under 10 s on the
2-core machine.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
from common import sh, testbed_up  # noqa: E402

NAME = f"bm{random.randrange(10**6):06d}"
PORT = 7070
# Accepts connections and closes them at once.
LISTENER = ("import socket\\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)"
            f";s.bind(('0.0.0.0',{PORT}));s.listen(4096)\\nwhile True:\\n c,_=s.accept();c.close()")
CHECKS = ("checks:\n  - name: matrix\n"
          f"    matrix: {{from: {{allPods: true}}, to: {{allPods: true}}, port: tcp/{PORT}}}\n")


def topology(pods, nodes, overlay):
    """`pods` listeners spread evenly over `nodes` nodes."""
    lines = [f"name: {NAME}", "cluster:", f"  overlay: {overlay}", "nodes:"]
    lines += [f"  - name: n{i + 1}" for i in range(nodes)]
    lines.append("pods:")
    for i in range(pods):
        lines += [
            f"  - name: p{i:03d}",
            f"    node: n{i % nodes + 1}",
            "    containers:",
            "      - name: listen",
            f"        command: [python3, -c, \"{LISTENER}\"]",
            f"        ready: {{tcp: {PORT}}}",
        ]
    return "\n".join(lines) + "\n"


def table_fulls():
    """The kernel's count of IPv4 neighbour table overflows, all CPUs."""
    with open("/proc/net/stat/arp_cache") as f:
        rows = [line.split() for line in f]
    col = rows[0].index("table_fulls")
    return sum(int(r[col], 16) for r in rows[1:])


def run_check(bin_, checks, perf=None):
    """One `testbed check --json` of the matrix: its wall time and the
    number of cells that were not reachable."""
    cmd = [bin_, "check", NAME, "--checks", checks, "--json"]
    if perf:
        cmd = ["perf", "record", "-g", "-o", perf, "--"] + cmd
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    took = time.monotonic() - t
    if r.returncode not in (0, 1):
        sys.exit(f"check failed ({r.returncode}): {r.stderr}")
    doc = json.loads(r.stdout)
    cells = "".join(doc["checks"][0]["table"]["cells"])
    return took, sum(1 for c in cells if c != ".")


def reference(bin_, plan, sample):
    """Seconds per pair of one `testbed exec ... nc` per pair, on `sample`
    seeded random pairs, and the tool used; failures are counted."""
    pods = [p for p in plan["pods"]]
    rng = random.Random(11)
    pairs = [(rng.choice(pods), rng.choice(pods)) for _ in range(sample)]
    nc = shutil.which("nc")
    failed = 0
    t = time.monotonic()
    for src, dst in pairs:
        if nc:
            tool = ["nc", "-z", "-w1", dst["ip"], str(PORT)]
        else:
            tool = ["timeout", "1", "bash", "-c", f"exec 3<>/dev/tcp/{dst['ip']}/{PORT}"]
        r = subprocess.run([bin_, "exec", "-t", NAME, src["name"], "--"] + tool,
                           capture_output=True)
        failed += r.returncode != 0
    per_pair = (time.monotonic() - t) / sample
    return per_pair, "nc -z -w1" if nc else "bash /dev/tcp (no nc installed)", failed


def profile(perf_data):
    """The top of `perf report` of the recorded run."""
    out = sh("perf", "report", "-i", perf_data, "--no-children", "--sort", "comm,dso,sym",
             "--stdio", "--percent-limit", "1.5", "-g", "none", check=False)
    return "\n".join(line for line in out.splitlines() if line and not line.startswith("#"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--overlay", default="udp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sample", type=int, default=200, help="pairs timed for the exec reference")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark creates network namespaces")
    with testbed_up(a.bin, topology(a.pods, a.nodes, a.overlay)) as (path, plan):
        checks = os.path.join(os.path.dirname(path), "checks.yaml")
        with open(checks, "w") as f:
            f.write(CHECKS)
        fulls = table_fulls()
        run_check(a.bin, checks)  # warm-up: neighbour entries, conntrack, page cache
        runs = [run_check(a.bin, checks) for _ in range(a.runs)]
        fulls = table_fulls() - fulls
        per_pair, tool, ref_failed = reference(a.bin, plan, a.sample)
        prof = None
        if a.profile:
            with tempfile.TemporaryDirectory() as dir_:
                data = os.path.join(dir_, "perf.data")
                run_check(a.bin, checks, perf=data)
                prof = profile(data)
    pairs = a.pods * a.pods
    check_s = statistics.median(t for t, _ in runs)
    unreachable = max(u for _, u in runs)
    ref_s = per_pair * pairs
    print("| method | pairs | time | per pair | unreachable | target < 10 s |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| `testbed check` matrix (median of {a.runs}) | {pairs:,} | {check_s:.2f} s"
          f" | {check_s / pairs * 1e3:.2f} ms | {unreachable} | {'met' if check_s < 10 else 'missed'} |")
    print(f"| one `testbed exec ... {tool}` per pair ({a.sample} sampled, extrapolated) | {pairs:,}"
          f" | {ref_s:.0f} s | {per_pair * 1e3:.1f} ms | {ref_failed} of {a.sample} | - |")
    print(f"\n{a.pods} pods on {a.nodes} nodes ({a.overlay} overlay), {os.cpu_count()} cores;"
          f" check runs {', '.join(f'{t:.2f} s' for t, _ in runs)}; matrix {ref_s / check_s:.0f}x faster"
          f" than exec; neighbour table overflows during the runs: {fulls}")
    if prof:
        print("\nperf (last matrix run):\n" + prof)


if __name__ == "__main__":
    main()
