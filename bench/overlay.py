#!/usr/bin/env python3
"""Measures pod-to-pod throughput and round-trip time over each overlay.

Two nodes with one pod each (an iperf3 server and a UDP echo server in the
second), for the udp overlay (the testbed's Rust data path), the kernel's
vxlan, host-gw routes, and two pods on the same node as the reference; TCP
throughput with one and four streams (iperf3), the median UDP round trip,
datagrams the kernel dropped at UDP sockets in the nodes during the
one-stream run, and for the udp overlay its daemons' CPU time per gigabyte
and peak memory. The four testbeds are up at once and each round measures
them in turn; the table holds the medians of the rounds (--reps). Run as root from the repository after `cargo build --release`:

    python3 bench/overlay.py [--seconds 5] [--bin target/release/testbed] [--profile]

With --profile, `perf record` samples the udp overlay's daemons during the
one-stream run and the script prints the symbols (user and kernel) with the
largest shares of their samples.

Reference figures on this machine kind (../shared/README.md, measured with
flannel's proxy_amd64.c, not by this script): veth 16-17 Gbit/s, kernel
vxlan about 14 Gbit/s, flannel's own C UDP data path about 0.9 Gbit/s with
2.6 times vxlan's round-trip time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import contextlib
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
from common import ECHO, PING, daemon_pids, sh, testbed_up  # noqa: E402

# The testbed's name in this run: two runs at once do not meet.
NAME = f"bovl{os.getpid() % 100000}"

def topology(name, overlay, same_node):
    node_b = "node1" if same_node else "node2"
    return f"""name: {name}
cluster: {{overlay: {overlay}}}
nodes: [{{name: node1}}, {{name: node2}}]
pods:
  - {{name: a, node: node1, containers: [{{name: c, command: [sleep, infinity]}}]}}
  - name: b
    node: {node_b}
    containers:
      - {{name: iperf, command: [iperf3, -s], ready: {{tcp: 5201}}}}
      - {{name: echo, command: [python3, -c, "{ECHO.replace(chr(10), chr(92) + 'n')}"]}}
"""


def udp_errors(name):
    total = 0
    for node in ("node1", "node2"):
        out = sh("ip", "netns", "exec", f"tb-{name}.node.{node}", "cat", "/proc/net/snmp")
        lines = [l.split() for l in out.splitlines() if l.startswith("Udp:")]
        if len(lines) >= 2:
            row = dict(zip(lines[0][1:], map(int, lines[1][1:])))
            total += row.get("RcvbufErrors", 0) + row.get("InErrors", 0)
    return total


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    return total / tick


def peak_mib(pids):
    m = 0
    for p in pids:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmHWM:"):
                m = max(m, int(line.split()[1]) / 1024)
    return m


def profile_start(pids, seconds, dir_):
    """`perf record` of `pids` for `seconds`, into DIR/perf.data."""
    return subprocess.Popen(["perf", "record", "-q", "-F", "999", "-o", f"{dir_}/perf.data",
                             "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def profile_top(perf, dir_, n=10):
    """The `n` symbols with the largest shares of the recorded samples."""
    _, err = perf.communicate()
    if perf.returncode != 0:
        sys.exit(f"perf record: {err}")
    out = sh("perf", "report", "-i", f"{dir_}/perf.data", "--stdio", "--no-children", "--sort", "sym")
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%") and not line.startswith("#"):
            rows.append({"share_percent": float(parts[0][:-1]), "symbol": " ".join(parts[1:])})
    return rows[:n]


def iperf(bin_, name, ip, streams, seconds):
    out = sh(bin_, "exec", "-t", name, "a", "--", "iperf3", "-c", ip, "-t", str(seconds), "-P", str(streams), "-J")
    return json.loads(out)["end"]["sum_received"]["bytes"], json.loads(out)["end"]["sum_received"]["bits_per_second"]


PATHS = [("same node (veth)", "host-gw", True), ("host-gw", "host-gw", False),
         ("vxlan (kernel)", "vxlan", False), ("udp (testbed)", "udp", False)]


def measure(bin_, name, ip, pids, seconds, profile_dir):
    """One round of every measurement on one testbed; with `profile_dir`,
    the udp daemons are profiled during the one-stream run."""
    perf = profile_start(pids, seconds, profile_dir) if profile_dir and pids else None
    errs0, cpu0 = udp_errors(name), cpu_seconds(pids)
    bytes1, bps1 = iperf(bin_, name, ip, 1, seconds)
    drops = udp_errors(name) - errs0
    cpu_per_gb = (cpu_seconds(pids) - cpu0) / (bytes1 / 1e9) if pids else None
    profile = profile_top(perf, profile_dir) if perf else None
    _, bps4 = iperf(bin_, name, ip, 4, seconds)
    rtt = float(sh(bin_, "exec", "-t", name, "a", "--", "python3", "-c", PING, ip))
    return {"tcp1": bps1 / 1e9, "tcp4": bps4 / 1e9, "rtt": rtt, "drops": drops, "cpu": cpu_per_gb}, profile


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="rounds over all paths (medians)")
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--profile", action="store_true", help="perf profile of the udp daemons")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    # Every path's testbed is up at once and the rounds go over all of them
    # in turn, so that the machine's drift between runs hits every path alike.
    runs = {label: [] for label, _, _ in PATHS}
    profile = None
    with contextlib.ExitStack() as beds:
        ups = []
        for i, (label, overlay, same) in enumerate(PATHS):
            name = f"{NAME}{i}"
            _, plan = beds.enter_context(testbed_up(a.bin, topology(name, overlay, same)))
            ip = [p for p in plan["pods"] if p["name"] == "b"][0]["ip"]
            ups.append((label, name, ip))
        for rep in range(a.reps):
            for label, name, ip in ups:
                pids = daemon_pids(name, "overlay-daemon")
                with tempfile.TemporaryDirectory() as dir_:
                    run, prof = measure(a.bin, name, ip, pids, a.seconds, dir_ if a.profile and rep == 0 else None)
                run["mib"] = peak_mib(pids) if pids else None
                runs[label].append(run)
                profile = prof or profile
    med = statistics.median
    rows = []
    for label, rs in runs.items():
        cpu = [r["cpu"] for r in rs if r["cpu"] is not None]
        rows.append({"path": label, "tcp1_gbit": round(med(r["tcp1"] for r in rs), 2),
                     "tcp4_gbit": round(med(r["tcp4"] for r in rs), 2),
                     "rtt_us": round(med(r["rtt"] for r in rs)), "udp_socket_drops": sum(r["drops"] for r in rs),
                     "daemon_cpu_s_per_gb": round(med(cpu), 2) if cpu else None,
                     "daemon_peak_mib": round(max(r["mib"] for r in rs), 1) if rs[0]["mib"] is not None else None})
    if a.json:
        print(json.dumps({"paths": rows, "profile": profile} if a.profile else rows, indent=2))
        return
    vx = next(r for r in rows if r["path"].startswith("vxlan"))
    print(f"{'path':<18} {'TCP 1 Gbit/s':>12} {'TCP 4 Gbit/s':>12} {'RTT us':>7} {'vs vxlan':>13} {'UDP drops':>9} {'CPU s/GB':>8} {'MiB':>5}")
    for r in rows:
        rel = f"{r['tcp1_gbit'] / vx['tcp1_gbit']:.0%} {r['rtt_us'] / vx['rtt_us']:.1f}x"
        cpu = "-" if r["daemon_cpu_s_per_gb"] is None else f"{r['daemon_cpu_s_per_gb']:.2f}"
        mem = "-" if r["daemon_peak_mib"] is None else f"{r['daemon_peak_mib']:.1f}"
        print(f"{r['path']:<18} {r['tcp1_gbit']:>12.2f} {r['tcp4_gbit']:>12.2f} {r['rtt_us']:>7} {rel:>13} {r['udp_socket_drops']:>9} {cpu:>8} {mem:>5}")
    print(f"medians of {a.reps} rounds (UDP drops: their sum); vs vxlan: one-stream throughput and RTT relative to the kernel's vxlan, measured in the same run")
    if profile:
        print("\nudp daemons during the one-stream run, share of their perf samples:")
        for r in profile:
            print(f"{r['share_percent']:>6.2f}%  {r['symbol']}")


if __name__ == "__main__":
    main()
