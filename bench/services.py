#!/usr/bin/env python3
"""Measures the service proxy modes.

1. Programming: the time to load 1,000 services x 10 endpoints into a fresh
   node namespace (`up`), and then the transaction that takes one endpoint of
   one service out (what the supervisor loads when that pod stops being
   ready: `testbed rules FILE --without POD`), for iptables
   (iptables-restore) and nftables (nft -f), median of 5.
2. Data path: TCP throughput (iperf3, 5 s, median of 3) and new connections per second
   through a cluster IP, against the same traffic sent straight to the pod's
   IP, for each mode (iptables, nftables, userspace), two nodes, the client
   and server on different nodes (udp overlay).

Run as root from the repository after `cargo build --release`:

    python3 bench/services.py [--bin target/release/testbed]

Targets (issue 5): iptables and nftables modes at least 90% of direct
throughput; 1000 x 10 programmed in under 1 s and one endpoint change in
under 50 ms in nftables mode; userspace mode at least 50% of direct
throughput.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# A server that accepts connections and closes them at once.
ACCEPT = ("import socket\\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)"
          ";s.bind(('0.0.0.0',7070));s.listen(4096)\\nwhile True:\\n c,_=s.accept();c.close()")
# Connections closed with a reset (SO_LINGER 0) so that repeated runs do
# not fill the client's ports with TIME_WAIT.
CONNS = ("import socket,struct,time,sys\nn=0;t=time.time()\n"
         "while time.time()-t<3:\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n"
         " s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0));s.close();n+=1\n"
         "print(n/3)")


def sh(*cmd, check=True, stdin=None):
    r = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {r.stderr}")
    return r.stdout


def big_topology(mode):
    """1,000 services of 10 endpoints each: s0 selects pods a0..a9 alone, the
    others all select b0..b9, so that pod a3 leaving changes one service."""
    lines = ["name: bsvc", f"cluster: {{proxy: {mode}, serviceCIDR: 10.96.0.0/16}}", "nodes: [{name: node1}]", "pods:"]
    for g in "ab":
        for i in range(10):
            lines.append(f"  - {{name: {g}{i}, labels: {{grp: {g}}}, containers: [{{name: c, command: [sleep, infinity]}}]}}")
    lines.append("services:")
    for i in range(1000):
        grp = "a" if i == 0 else "b"
        lines.append(f"  - {{name: s{i}, selector: {{grp: {grp}}}, ports: [{{port: 80, targetPort: 8080}}]}}")
    return "\n".join(lines) + "\n"


def timed_load(ns, program, rules):
    t = time.monotonic()
    sh("ip", "netns", "exec", ns, *program, stdin=rules)
    return time.monotonic() - t


def programming(bin_):
    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(big_topology("iptables"))
        path = f.name
    for mode, program in [("iptables", ["iptables-restore", "--noflush"]), ("nftables", ["nft", "-f", "-"])]:
        first = sh(bin_, "rules", path, "--mode", mode)
        update = sh(bin_, "rules", path, "--mode", mode, "--without", "a3")
        ups, changes = [], []
        for _ in range(5):
            ns = "tbbench-rules"
            sh("ip", "netns", "add", ns)
            try:
                ups.append(timed_load(ns, program, first))
                changes.append(timed_load(ns, program, update))
            finally:
                sh("ip", "netns", "delete", ns)
        rows.append({"mode": mode, "rules_lines": first.count("\n"),
                     "program_1000x10_ms": round(statistics.median(ups) * 1000, 1),
                     "endpoint_change_ms": round(statistics.median(changes) * 1000, 1),
                     "change_lines": update.count("\n")})
    os.unlink(path)
    return rows


def topology(mode):
    return f"""name: bsvc
cluster: {{proxy: {mode}}}
nodes: [{{name: node1}}, {{name: node2}}]
pods:
  - {{name: client, node: node1, containers: [{{name: c, command: [sleep, infinity]}}]}}
  - name: server
    node: node2
    labels: {{app: s}}
    containers:
      - {{name: iperf, command: [iperf3, -s], ready: {{tcp: 5201}}}}
      - name: accept
        command: [python3, -c, "{ACCEPT}"]
        ready: {{tcp: 7070}}
services:
  - name: s
    selector: {{app: s}}
    ports: [{{name: iperf, port: 5201}}, {{name: accept, port: 7070}}]
"""


def datapath(bin_, seconds, reps):
    rows = []
    for mode in ["iptables", "nftables", "userspace"]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(topology(mode))
            path = f.name
        sh(bin_, "down", "bsvc", check=False)
        sh(bin_, "up", path, "--timeout", "60s")
        plan = json.loads(sh(bin_, "plan", "--json", path))
        vip = plan["services"][0]["clusterIP"]
        pod = [p for p in plan["pods"] if p["name"] == "server"][0]["ip"]
        row = {"mode": mode}
        # Alternate direct and cluster IP runs and keep the medians: the
        # machine's speed drifts between runs more than the modes differ.
        gbits = {"direct": [], "cluster IP": []}
        conns = {"direct": [], "cluster IP": []}
        for _ in range(reps):
            for label, ip in [("direct", pod), ("cluster IP", vip)]:
                out = json.loads(sh(bin_, "exec", "-t", "bsvc", "client", "--", "iperf3", "-c", ip, "-t", str(seconds), "-J"))
                gbits[label].append(out["end"]["sum_received"]["bits_per_second"] / 1e9)
                conns[label].append(float(sh(bin_, "exec", "-t", "bsvc", "client", "--", "python3", "-c", CONNS, ip, "7070")))
        for label in gbits:
            row[f"{label} Gbit/s"] = round(statistics.median(gbits[label]), 2)
            row[f"{label} conn/s"] = round(statistics.median(conns[label]))
        sh(bin_, "down", "bsvc")
        os.unlink(path)
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="runs of each measurement (median)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    prog = programming(a.bin)
    data = datapath(a.bin, a.seconds, a.reps)
    if a.json:
        print(json.dumps({"programming": prog, "datapath": data}, indent=2))
        return
    print(f"{'mode':<9} {'rule lines':>10} {'1000x10 ms':>11} {'change lines':>12} {'change ms':>10}")
    for r in prog:
        print(f"{r['mode']:<9} {r['rules_lines']:>10} {r['program_1000x10_ms']:>11} {r['change_lines']:>12} {r['endpoint_change_ms']:>10}")
    print()
    print(f"{'mode':<9} {'direct Gbit/s':>13} {'VIP Gbit/s':>10} {'VIP/direct':>10} {'direct conn/s':>13} {'VIP conn/s':>10}")
    for r in data:
        ratio = r["cluster IP Gbit/s"] / r["direct Gbit/s"]
        print(f"{r['mode']:<9} {r['direct Gbit/s']:>13} {r['cluster IP Gbit/s']:>10} {ratio:>10.0%} {r['direct conn/s']:>13} {r['cluster IP conn/s']:>10}")


if __name__ == "__main__":
    main()
