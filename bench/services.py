#!/usr/bin/env python3
"""Measures the service proxy modes.

1. Programming: the time to load 1,000 services x 10 endpoints into a fresh
   node namespace (`up`), and then the transaction that takes one endpoint of
   one service out (what the supervisor loads when that pod stops being
   ready: `testbed rules FILE --without POD`), for iptables
   (iptables-restore) and nftables (nft -f), median of 5.
   The same again with half of the services (s0 among them) under ClientIP
   affinity.
2. Data path: TCP throughput (iperf3, 5 s, median of 3) and new connections per second
   through a cluster IP, against the same traffic sent straight to the pod's
   IP, for each mode (iptables, nftables, userspace), two nodes, the client
   and server on different nodes (udp overlay); connection attempts that
   time out (2 s) are counted (direct/cluster IP, over all runs).
3. Following the pods: a client pod on node1 sends HTTP requests to a
   cluster IP back to back (a new connection each) while
   five backends on node2 serve them; one backend's container is killed
   for good (SIGKILL, restartPolicy Never), and the script measures how
   long until its address is gone from node1's installed rules and until
   the last request it refused (its namespace answers with a reset; median
   of 3 kills per mode; other failures, timeouts, are counted apart).
   Then node1's overlay daemon (and, in userspace mode, its proxy) is killed
   once, and the time until requests succeed again is measured (the
   supervisor starts it again; requests time out after 100 ms here, so that
   TCP's one-second SYN retransmission does not hide when it is back).

Run as root from the repository after `cargo build --release`:

    python3 bench/services.py [--bin target/release/testbed] [--parts programming,datapath,following]

Targets (issue 5): iptables and nftables modes at least 90% of direct
throughput; 1000 x 10 programmed in under 1 s and one endpoint change in
under 50 ms in nftables mode; userspace mode at least 50% of direct
throughput.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
from common import daemon_pids, sh, testbed_up  # noqa: E402

# Testbed and namespace names of this run: two runs at once do not meet.
NAME = f"bsvc{os.getpid() % 100000}"

# A server that accepts connections and closes them at once.
ACCEPT = ("import socket\\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)"
          ";s.bind(('0.0.0.0',7070));s.listen(4096)\\nwhile True:\\n c,_=s.accept();c.close()")
# Connections closed with a reset (SO_LINGER 0) so that repeated runs do
# not fill the client's ports with TIME_WAIT.
# Prints connections per second and how many attempts failed (timed out).
CONNS = ("import socket,struct,time,sys\nn=0;f=0;t=time.time()\n"
         "while time.time()-t<3:\n try:\n  s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n"
         "  s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0));s.close();n+=1\n"
         " except OSError: f+=1\n"
         "print(n/3,f)")


def big_topology(mode, sticky):
    """1,000 services of 10 endpoints each: s0 selects pods a0..a9 alone, the
    others all select b0..b9, so that pod a3 leaving changes one service.
    With `sticky`, every other service (s0 among them) has ClientIP
    affinity."""
    lines = [f"name: {NAME}", f"cluster: {{proxy: {mode}, serviceCIDR: 10.96.0.0/16}}", "nodes: [{name: node1}]", "pods:"]
    for g in "ab":
        for i in range(10):
            lines.append(f"  - {{name: {g}{i}, labels: {{grp: {g}}}, containers: [{{name: c, command: [sleep, infinity]}}]}}")
    lines.append("services:")
    for i in range(1000):
        grp = "a" if i == 0 else "b"
        affinity = ", sessionAffinity: ClientIP" if sticky and i % 2 == 0 else ""
        lines.append(f"  - {{name: s{i}, selector: {{grp: {grp}}}{affinity}, ports: [{{port: 80, targetPort: 8080}}]}}")
    return "\n".join(lines) + "\n"


def timed_load(ns, program, rules):
    t = time.monotonic()
    sh("ip", "netns", "exec", ns, *program, stdin=rules)
    return time.monotonic() - t


def programming(bin_):
    rows = []
    for sticky in (False, True):
        with tempfile.TemporaryDirectory() as dir_:
            path = os.path.join(dir_, "topology.yaml")
            with open(path, "w") as f:
                f.write(big_topology("iptables", sticky))
            for mode, program in [("iptables", ["iptables-restore", "--noflush"]), ("nftables", ["nft", "-f", "-"])]:
                rows.append(programming_of(bin_, path, mode, program, sticky))
    return rows


def programming_of(bin_, path, mode, program, sticky):
    first = sh(bin_, "rules", path, "--mode", mode)
    update = sh(bin_, "rules", path, "--mode", mode, "--without", "a3")
    ups, changes = [], []
    for _ in range(5):
        ns = f"tbbench-rules-{os.getpid()}"
        sh("ip", "netns", "add", ns)
        try:
            ups.append(timed_load(ns, program, first))
            changes.append(timed_load(ns, program, update))
        finally:
            sh("ip", "netns", "delete", ns)
    return {"mode": mode, "sticky": sticky, "rules_lines": first.count("\n"),
            "program_1000x10_ms": round(statistics.median(ups) * 1000, 1),
            "endpoint_change_ms": round(statistics.median(changes) * 1000, 1),
            "change_lines": update.count("\n")}


def topology(mode):
    return f"""name: {NAME}
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
        with testbed_up(bin_, topology(mode)) as (_, plan):
            rows.append(datapath_of(bin_, mode, plan, seconds, reps))
    return rows


def datapath_of(bin_, mode, plan, seconds, reps):
    vip = plan["services"][0]["clusterIP"]
    pod = [p for p in plan["pods"] if p["name"] == "server"][0]["ip"]
    row = {"mode": mode}
    # Alternate direct and cluster IP runs and keep the medians: the
    # machine's speed drifts between runs more than the modes differ.
    gbits = {"direct": [], "cluster IP": []}
    conns = {"direct": [], "cluster IP": []}
    failed = {"direct": 0, "cluster IP": 0}
    for _ in range(reps):
        for label, ip in [("direct", pod), ("cluster IP", vip)]:
            out = json.loads(sh(bin_, "exec", "-t", NAME, "client", "--", "iperf3", "-c", ip, "-t", str(seconds), "-J"))
            gbits[label].append(out["end"]["sum_received"]["bits_per_second"] / 1e9)
            rate, fails = sh(bin_, "exec", "-t", NAME, "client", "--", "python3", "-c", CONNS, ip, "7070").split()
            conns[label].append(float(rate))
            failed[label] += int(fails)
    for label in gbits:
        row[f"{label} Gbit/s"] = round(statistics.median(gbits[label]), 2)
        row[f"{label} conn/s"] = round(statistics.median(conns[label]))
        row[f"{label} failed conns"] = failed[label]
    return row


# Serves its pod's name over HTTP on 8080.
# The page is written in a volume (the testbed's directory, gone with
# `down`), not in the host's /tmp.
HTTP = ("[sh, -c, 'hostname > index.html && exec python3 -m http.server 8080'], "
        "workingDir: /srv, volumeMounts: [{name: www, mountPath: /srv}]")
# Requests to http://ADDR/ back to back for SECONDS, one connection each
# with a TIMEOUT, printing "start end ok BODY" or "start end err ERROR"
# (CLOCK_MONOTONIC, the same clock as the script's).
LOOP = """import socket,sys,time
end=time.monotonic()+float(sys.argv[2])
while time.monotonic()<end:
 t=time.monotonic()
 try:
  s=socket.create_connection((sys.argv[1],80),timeout=float(sys.argv[3]))
  s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n');d=b''
  while True:
   c=s.recv(4096)
   if not c: break
   d+=c
  s.close();print(t,time.monotonic(),'ok',d.split(b'\\r\\n\\r\\n',1)[-1].decode().strip(),flush=True)
 except OSError as e:
  print(t,time.monotonic(),'err',type(e).__name__,flush=True);time.sleep(0.005)
"""
VICTIMS = ["v0", "v1", "v2"]


def following_topology(mode):
    pods = [f"  - {{name: client, node: node1, containers: [{{name: c, command: [sleep, infinity]}}]}}"]
    for p in ["steady1", "steady2"] + VICTIMS:
        policy = ", restartPolicy: Never" if p in VICTIMS else ""
        pods.append(f"  - {{name: {p}, node: node2, labels: {{app: web}}, volumes: [{{name: www}}], containers: [{{name: http, command: {HTTP}{policy}, ready: {{tcp: 8080}}}}]}}")
    return f"""name: {NAME}
cluster: {{overlay: udp, proxy: {mode}}}
nodes: [{{name: node1}}, {{name: node2}}]
pods:
""" + "\n".join(pods) + """
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""


def pids_in_netns(ns):
    """The processes whose network namespace is /run/netns/NS."""
    ino = os.stat(f"/run/netns/{ns}").st_ino
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}/ns/net").st_ino == ino:
                    found.append(int(p))
            except OSError:
                pass
    return found


def installed_rules(mode):
    ns = f"tb-{NAME}.node.node1"
    if mode == "iptables":
        return sh("ip", "netns", "exec", ns, "iptables-save", "-t", "nat")
    return sh("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "testbed")


def while_requesting(bin_, vip, seconds, timeout, act):
    """Runs the request loop in the client pod for `seconds`, calls `act()`
    (which returns the moment it acted) after a warm-up, and returns that
    moment and the requests as (start, end, ok, body)."""
    client = subprocess.Popen([bin_, "exec", "-t", NAME, "client", "--", "python3", "-c", LOOP, vip, str(seconds), str(timeout)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.8)
    moment = act()
    out, _ = client.communicate()
    reqs = []
    for line in out.splitlines():
        start, end, status, body = line.split(" ", 3)
        reqs.append((float(start), float(end), status == "ok", body))
    if not any(ok for _, _, ok, _ in reqs):
        sys.exit("no request succeeded")
    return moment, reqs


def leaves_rotation(bin_, mode, vip, victim, ip):
    """Kills `victim`'s container; returns the seconds until its address is
    gone from node1's rules (None in userspace mode, whose rules hold no
    endpoints), until the start of the last request that it refused (or
    answered), how many it refused, and how many others failed (timed
    out)."""
    pattern = re.compile(r"(?<![\d.])" + re.escape(ip) + r"(?!\d)")
    gone = {}

    def act():
        if mode != "userspace" and not pattern.search(installed_rules(mode)):
            sys.exit(f"{ip} is not in the rules before the kill")
        for pid in pids_in_netns(f"tb-{NAME}.pod.default.{victim}"):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        if mode != "userspace":
            while pattern.search(installed_rules(mode)):
                if time.monotonic() - killed > 5:
                    sys.exit(f"{ip} still in the rules 5 s after the kill")
                time.sleep(0.01)
            gone["rules"] = time.monotonic() - killed
        return killed

    killed, reqs = while_requesting(bin_, vip, 3.0, 1.0, act)
    after = [(start, ok, body) for start, _, ok, body in reqs if start >= killed]
    # The dead backend's namespace answers a connection with a reset.
    bad = [start for start, ok, body in after if body in (victim, "ConnectionRefusedError", "ConnectionResetError")]
    other = sum(1 for _, ok, body in after if not ok) - len(bad)
    last = (max(bad) - killed) if bad else 0.0
    return gone.get("rules"), last, len(bad), other


def heals(bin_, vip, kind):
    """Kills node1's daemon `kind` once; returns the seconds from the kill to
    the end of the first request that succeeded after requests failed."""
    def act():
        pids = daemon_pids(NAME, kind, "node1")
        if len(pids) != 1:
            sys.exit(f"{kind} of {NAME} on node1: {pids}")
        os.kill(pids[0], signal.SIGKILL)
        return time.monotonic()

    killed, reqs = while_requesting(bin_, vip, 4.0, 0.1, act)
    failed = [start for start, _, ok, _ in reqs if start >= killed and not ok]
    if not failed:
        return 0.0
    after = [end for start, end, ok, _ in reqs if ok and start > failed[0]]
    if not after:
        sys.exit(f"requests did not succeed again within 4 s of killing the {kind}")
    return min(after) - killed


def following(bin_):
    rows = []
    for mode in ["iptables", "nftables", "userspace"]:
        with testbed_up(bin_, following_topology(mode)) as (_, plan):
            vip = plan["services"][0]["clusterIP"]
            ips = {p["name"]: p["ip"] for p in plan["pods"]}
            rules, last, failed, other = [], [], [], []
            for victim in VICTIMS:
                r, l, n, o = leaves_rotation(bin_, mode, vip, victim, ips[victim])
                if r is not None:
                    rules.append(r)
                last.append(l)
                failed.append(n)
                other.append(o)
            row = {"mode": mode,
                   "rules_updated_ms": round(statistics.median(rules) * 1000) if rules else None,
                   "last_refused_request_ms": round(statistics.median(last) * 1000),
                   "refused_requests": statistics.median(failed),
                   "other_failures": sum(other),
                   "overlay_daemon_heal_ms": round(heals(bin_, vip, "overlay-daemon") * 1000)}
            if mode == "userspace":
                row["proxy_heal_ms"] = round(heals(bin_, vip, "proxy-daemon") * 1000)
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="runs of each measurement (median)")
    ap.add_argument("--parts", default="programming,datapath,following",
                    help="which measurements, comma-separated")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    parts = a.parts.split(",")
    results = {}
    if "programming" in parts:
        results["programming"] = programming(a.bin)
    if "datapath" in parts:
        results["datapath"] = datapath(a.bin, a.seconds, a.reps)
    if "following" in parts:
        results["following"] = following(a.bin)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    if "programming" in results:
        print(f"{'mode':<9} {'affinity':<13} {'rule lines':>10} {'1000x10 ms':>11} {'change lines':>12} {'change ms':>10}")
        for r in results["programming"]:
            affinity = "half ClientIP" if r["sticky"] else "none"
            print(f"{r['mode']:<9} {affinity:<13} {r['rules_lines']:>10} {r['program_1000x10_ms']:>11} {r['change_lines']:>12} {r['endpoint_change_ms']:>10}")
        print()
    if "datapath" in results:
        print(f"{'mode':<9} {'direct Gbit/s':>13} {'VIP Gbit/s':>10} {'VIP/direct':>10} {'direct conn/s':>13} {'VIP conn/s':>10} {'failed conns':>12}")
        for r in results["datapath"]:
            ratio = r["cluster IP Gbit/s"] / r["direct Gbit/s"]
            fails = f"{r['direct failed conns']}/{r['cluster IP failed conns']}"
            print(f"{r['mode']:<9} {r['direct Gbit/s']:>13} {r['cluster IP Gbit/s']:>10} {ratio:>10.0%} {r['direct conn/s']:>13} {r['cluster IP conn/s']:>10} {fails:>12}")
        print()
    if "following" in results:
        print(f"{'mode':<9} {'rules ms':>8} {'last refused ms':>15} {'refused':>7} {'other failures':>14} {'overlay daemon heal ms':>22} {'proxy heal ms':>13}")
        for r in results["following"]:
            rules = "-" if r["rules_updated_ms"] is None else r["rules_updated_ms"]
            proxy = r.get("proxy_heal_ms", "-")
            print(f"{r['mode']:<9} {rules:>8} {r['last_refused_request_ms']:>15} {r['refused_requests']:>7} {r['other_failures']:>14} {r['overlay_daemon_heal_ms']:>22} {proxy:>13}")


if __name__ == "__main__":
    main()
