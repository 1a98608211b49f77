#!/usr/bin/env python3
"""Measures `testbed up` and `testbed down` at scale.

Builds topologies of 50, 200 and 1000 pods spread over 10 nodes (host-gw
overlay, one `sleep infinity` container per pod), brings each up and down
several times, and prints the median up, down and total seconds and the peak
memory of the testbed processes. Run as root from the repository:

    sudo python3 bench/updown.py [--runs 5] [--sizes 50,200,1000] [--bin target/release/testbed]

Reference (same 2-core machine kind): Mininet creates and removes 200 hosts
on one bridge in about 9 s.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def topology(name, pods, nodes=10):
    lines = [f"name: {name}", "cluster: {overlay: host-gw}", "nodes:"]
    lines += [f"  - name: node{i}" for i in range(1, nodes + 1)]
    lines.append("pods:")
    for i in range(pods):
        lines.append(f"  - {{name: p{i}, containers: [{{name: c, command: [sleep, infinity]}}]}}")
    return "\n".join(lines) + "\n"


def run(cmd):
    t = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
    return time.monotonic() - t


def supervisor_peak_mib(name):
    """The peak resident memory of the testbed's supervisor, from /proc."""
    try:
        pid = open(f"/run/testbed/{name}/supervisor.pid").read().split()[0]
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="50,200,1000")
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark creates network namespaces")
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        name = f"bench{size}"
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(topology(name, size))
            path = f.name
        ups, downs, sup = [], [], 0.0
        subprocess.run([a.bin, "down", name], capture_output=True)
        for _ in range(a.runs):
            ups.append(run([a.bin, "up", path, "--timeout", "120s"]))
            sup = max(sup, supervisor_peak_mib(name))
            downs.append(run([a.bin, "down", name]))
        os.unlink(path)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        up, down = statistics.median(ups), statistics.median(downs)
        rows.append({"pods": size, "nodes": 10, "up_s": round(up, 3), "down_s": round(down, 3),
                     "total_s": round(up + down, 3), "peak_rss_mib": round(peak_mib, 1),
                     "supervisor_peak_mib": round(sup, 1), "runs": a.runs})
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'pods':>5} {'nodes':>5} {'up s':>7} {'down s':>7} {'total s':>8} {'CLI peak MiB':>13} {'supervisor MiB':>15}")
    for r in rows:
        print(f"{r['pods']:>5} {r['nodes']:>5} {r['up_s']:>7.3f} {r['down_s']:>7.3f} {r['total_s']:>8.3f}"
              f" {r['peak_rss_mib']:>13.1f} {r['supervisor_peak_mib']:>15.1f}")
    print(f"median of {a.runs} runs; reference: Mininet, 200 hosts on one bridge, about 9 s up and down")


if __name__ == "__main__":
    main()
