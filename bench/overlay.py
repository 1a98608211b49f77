#!/usr/bin/env python3
"""Measures pod-to-pod throughput and round-trip time over each overlay.

Two nodes with one pod each (an iperf3 server and a UDP echo server in the
second), for the udp overlay (the testbed's Rust data path), the kernel's
vxlan, host-gw routes, and two pods on the same node as the reference; TCP
throughput with one and four streams (iperf3), the median UDP round trip,
datagrams the kernel dropped at UDP sockets in the nodes during the
one-stream run, and for the udp overlay its daemons' CPU time per gigabyte
and peak memory. Run as root from the repository after `cargo build --release`:

    python3 bench/overlay.py [--seconds 5] [--bin target/release/testbed]

Reference figures on this machine kind: veth 16-17 Gbit/s, kernel vxlan about
14 Gbit/s, flannel's own C UDP data path about 0.9 Gbit/s with 2.6 times
vxlan's round-trip time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ECHO = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',7000))\n"
        "while True:\n d,a=s.recvfrom(2048);s.sendto(d,a)")
PING = ("import socket,time,statistics,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1);r=[]\n"
        "for i in range(300):\n t=time.perf_counter();s.sendto(b'x'*64,(sys.argv[1],7000))\n"
        " try:\n  s.recv(2048);r.append(time.perf_counter()-t)\n except OSError: pass\n"
        "print(statistics.median(r)*1e6)")


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


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {r.stderr}")
    return r.stdout


def udp_errors(name):
    total = 0
    for node in ("node1", "node2"):
        out = sh("ip", "netns", "exec", f"tb-{name}.node.{node}", "cat", "/proc/net/snmp")
        lines = [l.split() for l in out.splitlines() if l.startswith("Udp:")]
        if len(lines) >= 2:
            row = dict(zip(lines[0][1:], map(int, lines[1][1:])))
            total += row.get("RcvbufErrors", 0) + row.get("InErrors", 0)
    return total


def daemons(name):
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"overlay-daemon" in cmd and name.encode() in cmd:
                pids.append(int(p))
    return pids


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


def iperf(bin_, name, ip, streams, seconds):
    out = sh(bin_, "exec", "-t", name, "a", "--", "iperf3", "-c", ip, "-t", str(seconds), "-P", str(streams), "-J")
    return json.loads(out)["end"]["sum_received"]["bytes"], json.loads(out)["end"]["sum_received"]["bits_per_second"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for label, overlay, same in [("same node (veth)", "host-gw", True), ("host-gw", "host-gw", False),
                                 ("vxlan (kernel)", "vxlan", False), ("udp (testbed)", "udp", False)]:
        name = "bovl"
        sh(a.bin, "down", name, check=False)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(topology(name, overlay, same))
            path = f.name
        sh(a.bin, "up", path, "--timeout", "60s")
        plan = json.loads(sh(a.bin, "plan", "--json", path))
        ip = [p for p in plan["pods"] if p["name"] == "b"][0]["ip"]
        pids = daemons(name)
        errs0, cpu0 = udp_errors(name), cpu_seconds(pids)
        bytes1, bps1 = iperf(a.bin, name, ip, 1, a.seconds)
        drops = udp_errors(name) - errs0
        cpu_per_gb = (cpu_seconds(pids) - cpu0) / (bytes1 / 1e9) if pids else None
        _, bps4 = iperf(a.bin, name, ip, 4, a.seconds)
        rtt = float(sh(a.bin, "exec", "-t", name, "a", "--", "python3", "-c", PING, ip))
        rows.append({"path": label, "tcp1_gbit": round(bps1 / 1e9, 2), "tcp4_gbit": round(bps4 / 1e9, 2),
                     "rtt_us": round(rtt), "udp_socket_drops": drops,
                     "daemon_cpu_s_per_gb": round(cpu_per_gb, 2) if cpu_per_gb is not None else None,
                     "daemon_peak_mib": round(peak_mib(pids), 1) if pids else None})
        sh(a.bin, "down", name)
        os.unlink(path)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    vx = next(r for r in rows if r["path"].startswith("vxlan"))
    print(f"{'path':<18} {'TCP 1 Gbit/s':>12} {'TCP 4 Gbit/s':>12} {'RTT us':>7} {'vs vxlan':>13} {'UDP drops':>9} {'CPU s/GB':>8} {'MiB':>5}")
    for r in rows:
        rel = f"{r['tcp1_gbit'] / vx['tcp1_gbit']:.0%} {r['rtt_us'] / vx['rtt_us']:.1f}x"
        cpu = "-" if r["daemon_cpu_s_per_gb"] is None else f"{r['daemon_cpu_s_per_gb']:.2f}"
        mem = "-" if r["daemon_peak_mib"] is None else f"{r['daemon_peak_mib']:.1f}"
        print(f"{r['path']:<18} {r['tcp1_gbit']:>12.2f} {r['tcp4_gbit']:>12.2f} {r['rtt_us']:>7} {rel:>13} {r['udp_socket_drops']:>9} {cpu:>8} {mem:>5}")
    print("vs vxlan: one-stream throughput and RTT relative to the kernel's vxlan, measured in the same run")


if __name__ == "__main__":
    main()
