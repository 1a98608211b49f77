#!/usr/bin/env python3
"""Measures what crossing machines costs a testbed spread over two.

Two emulated machines on this host, as the tests make them: each a network
and a mount namespace of its own with a private /run, held by a `sleep`,
joined by a veth pair as their physical network (192.0.2.1 and .2, MTU
1500), with Debian's etcd on the first. Each testbed is brought up with
`testbed up FILE --machine NAME` on both at once.

1. Per overlay (udp, vxlan, host-gw): from a pod on alpha, TCP throughput
   (iperf3, one stream) and the median UDP round trip (300 pings of 64
   bytes) to a pod on another node of alpha (within one machine: the
   reference, measured in the same testbed) and to a pod on a node of beta
   (across machines: LAN frames cross the span's vxlan between the
   machines' fabrics, 1450-byte LAN MTU).
2. Bringing up N pods per machine (--pods, default 2,500; 2 x 2,500 as the
   issue asks), both shares at once, against one machine bringing up the
   same N pods alone (the reference, same run).
3. Beta's death (every process of its testbed killed at once) to its RC
   pods serving again on alpha: when alpha's status has them ready, and
   when the ClusterIP answers from all four pods again (podEvictionTimeout
   1 s; the heartbeat's TTL is 5 s).

The two "machines" share this host's cores and memory, so a cross-machine
figure here is the span's and etcd's cost, not a real network's.

Run as root from the repository after `cargo build --release`:

    python3 bench/machines.py [--bin target/release/testbed] [--pods 2500] [--seconds 5] [--reps 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
from common import ECHO, PING, sh  # noqa: E402

ETCD = "http://192.0.2.1:2379"
TAG = f"bm{os.getpid() % 10000}"

# The page is written in a volume (the testbed's directory, gone with
# `down`), not in the host's /tmp.
HTTP = "hostname > index.html && exec python3 -m http.server 8080"


class Machine:
    """A network and mount namespace with a private /run, held by sleep."""

    def __init__(self):
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o mode=755 tmpfs /run && exec sleep infinity"])
        time.sleep(0.2)
        self.pid = self.holder.pid
        self.run("ip", "link", "set", "lo", "up")

    def cmd(self, *args):
        return ["nsenter", "-t", str(self.pid), "-n", "-m", *args]

    def run(self, *args, check=True):
        return sh(*self.cmd(*args), check=check)

    def kill_inside(self):
        """Kills (by pid) every process in this machine's network or mount
        namespace (what a bench left running on it)."""
        mine = {os.stat(f"/proc/{self.pid}/ns/{k}").st_ino for k in ("net", "mnt")}
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != self.pid:
                try:
                    if any(os.stat(f"/proc/{p}/ns/{k}").st_ino in mine for k in ("net", "mnt")):
                        os.kill(int(p), 9)
                except OSError:
                    pass

    def close(self):
        self.kill_inside()
        self.holder.kill()
        self.holder.wait()


def kill_testbed(m, name):
    """Kills (by pid) every process in testbed `name`'s namespaces on `m`,
    as when the machine dies."""
    pids = set()
    for line in m.run("ip", "netns", "list").splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(f"tb-{name}."):
            pids.update(int(p) for p in m.run("ip", "netns", "pids", ns).split())
    for p in pids:
        try:
            os.kill(p, 9)
        except OSError:
            pass


def pair():
    a, b = Machine(), Machine()
    a.run("ip", "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", "eth0",
          "netns", str(b.pid))
    for m, addr in ((a, "192.0.2.1"), (b, "192.0.2.2")):
        m.run("ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        m.run("ip", "link", "set", "eth0", "up")
    return a, b


def start_etcd(a, dir_):
    log = open(os.path.join(dir_, "etcd.log"), "w")
    p = subprocess.Popen(a.cmd("etcd", "--name", "m", "--data-dir", os.path.join(dir_, "etcd"),
                               "--listen-client-urls", ETCD, "--advertise-client-urls", ETCD,
                               "--listen-peer-urls", "http://127.0.0.1:2380",
                               "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                               "--initial-cluster", "m=http://127.0.0.1:2380"),
                         stdout=log, stderr=log)
    for _ in range(300):
        r = subprocess.run(a.cmd("etcdctl", "--endpoints", ETCD, "endpoint", "health"),
                           capture_output=True)
        if r.returncode == 0:
            return p
        time.sleep(0.1)
    sys.exit("etcd did not start")


def header(name, overlay, eviction="1s"):
    return f"""name: {name}
machines: [{{name: alpha, address: 192.0.2.1}}, {{name: beta, address: 192.0.2.2}}]
cluster:
  overlay: {overlay}
  registry: etcd
  etcd: {{endpoints: ["{ETCD}"]}}
  podEvictionTimeout: {eviction}
"""


def path_topology(name, overlay):
    server = ("      - {name: iperf, command: [iperf3, -s], ready: {tcp: 5201}}\n"
              f"      - {{name: echo, command: [python3, -c, \"{ECHO.replace(chr(10), chr(92) + 'n')}\"]}}\n")
    return header(name, overlay) + f"""nodes:
  - {{name: n1, machine: alpha}}
  - {{name: n2, machine: alpha}}
  - {{name: n3, machine: beta}}
pods:
  - {{name: a, node: n1, containers: [{{name: c, command: [sleep, infinity]}}]}}
  - name: near
    node: n2
    containers:
{server}  - name: far
    node: n3
    containers:
{server}"""


def write(dir_, name, text):
    path = os.path.join(dir_, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def up_both(bin_, a, b, path, timeout="600s"):
    """Brings both shares up at once; the wall time until both returned."""
    t0 = time.monotonic()
    ps = [subprocess.Popen(m.cmd(bin_, "up", path, "--machine", n, "--timeout", timeout),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
          for m, n in ((a, "alpha"), (b, "beta"))]
    for p in ps:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"up failed: {err}")
    return time.monotonic() - t0


def down_both(bin_, a, b, name):
    for m, n in ((b, "beta"), (a, "alpha")):
        m.run(bin_, "down", name, "--machine", n, check=False)


def in_pod(bin_, m, name, pod, *args):
    return m.run(bin_, "exec", "-t", name, pod, "--", *args)


def iperf(bin_, a, name, ip, seconds):
    """One-stream TCP throughput from pod `a` to `ip`, Gbit/s (tried again
    while the server is still busy with the last run)."""
    for _ in range(5):
        r = json.loads(in_pod(bin_, a, name, "a", "iperf3", "-c", ip, "-t", str(seconds), "-J"))
        if "error" not in r:
            return r["end"]["sum_received"]["bits_per_second"] / 1e9
        time.sleep(1)
    sys.exit(f"iperf3 to {ip}: {r['error']}")


def paths(bin_, a, b, dir_, seconds, reps):
    rows = []
    for overlay in ("udp", "vxlan", "host-gw"):
        name = f"{TAG}p{overlay[0]}"
        path = write(dir_, name, path_topology(name, overlay))
        plan = json.loads(sh(bin_, "plan", "--json", path))
        ip = {p["name"]: p["ip"] for p in plan["pods"]}
        up_both(bin_, a, b, path)
        try:
            got = {t: ([], []) for t in ("near", "far")}
            # Rounds alternate the two paths (the host's load changes).
            for _ in range(reps):
                for target in ("near", "far"):
                    got[target][0].append(iperf(bin_, a, name, ip[target], seconds))
                    got[target][1].append(
                        float(in_pod(bin_, a, name, "a", "python3", "-c", PING, ip[target])))
            for target, where in (("near", "within one machine"), ("far", "across machines")):
                gbps, rtt = got[target]
                rows.append((overlay, where, statistics.median(gbps), statistics.median(rtt)))
        finally:
            down_both(bin_, a, b, name)
    print(f"Medians of {reps} rounds.\n")
    print("| overlay | path | TCP Gbit/s (1 stream) | UDP RTT p50 (µs) |")
    print("|---|---|---|---|")
    for o, w, g, r in rows:
        print(f"| {o} | {w} | {g:.2f} | {r:.0f} |")
    print()


def many_pods(bin_, a, b, dir_, pods):
    nodes = 4
    def body(machines):
        per_node = pods // nodes
        lines = ["nodes:"]
        for m in machines:
            for i in range(nodes):
                lines.append(f"  - {{name: {m}{i}" + (f", machine: {m}}}" if len(machines) > 1 else "}"))
        lines.append("pods:")
        for m in machines:
            for i in range(nodes):
                for k in range(per_node):
                    lines.append(f"  - {{name: p{m}{i}-{k}, node: {m}{i}, containers: [{{name: c, command: [sleep, infinity]}}]}}")
        return "\n".join(lines) + "\n"
    name = f"{TAG}m"
    two = write(dir_, name, header(name, "vxlan") + "  subnetLen: 20\n" + body(["alpha", "beta"]))
    t_two = up_both(bin_, a, b, two, "900s")
    down_both(bin_, a, b, name)
    name1 = f"{TAG}o"
    one = write(dir_, name1, f"name: {name1}\ncluster: {{overlay: vxlan, subnetLen: 20}}\n" + body(["alpha"]))
    t0 = time.monotonic()
    a.run(bin_, "up", one, "--timeout", "900s")
    t_one = time.monotonic() - t0
    a.run(bin_, "down", name1, check=False)
    print("| bring-up | pods | seconds |")
    print("|---|---|---|")
    print(f"| one machine alone (reference) | {pods} | {t_one:.1f} |")
    print(f"| two machines at once | 2 x {pods} | {t_two:.1f} |")
    print()


def failover(bin_, a, b, dir_):
    name = f"{TAG}f"
    text = header(name, "udp") + f"""nodes:
  - {{name: n1, machine: alpha}}
  - {{name: n2, machine: alpha}}
  - {{name: n3, machine: beta}}
  - {{name: n4, machine: beta}}
replicationControllers:
  - name: web
    replicas: 4
    selector: {{app: web}}
    template:
      labels: {{app: web}}
      volumes: [{{name: www}}]
      containers: [{{name: http, command: [sh, -c, '{HTTP}'], workingDir: /srv, volumeMounts: [{{name: www, mountPath: /srv}}], ready: {{tcp: 8080}}}}]
services:
  - {{name: web, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""
    path = write(dir_, name, text)
    plan = json.loads(sh(bin_, "plan", "--json", path))
    vip = next(s["clusterIP"] for s in plan["services"] if s["name"] == "web")
    up_both(bin_, a, b, path)
    try:
        time.sleep(2)
        t0 = time.monotonic()
        kill_testbed(b, name)
        ready_at = serving_at = None
        while time.monotonic() - t0 < 120 and serving_at is None:
            if ready_at is None:
                st = json.loads(a.run(bin_, "status", name, "--json"))[0]
                on_alpha = [p for p in st["pods"] if p["node"] in ("n1", "n2") and p["ready"]]
                if len(on_alpha) == 4:
                    ready_at = time.monotonic() - t0
            else:
                out = in_pod(bin_, a, name, "web-0", "sh", "-c",
                             f"for i in $(seq 16); do curl -s -m 1 http://{vip}/; echo; done")
                if len({l for l in out.split() if l.startswith("web-")}) == 4:
                    serving_at = time.monotonic() - t0
            time.sleep(0.1)
    finally:
        down_both(bin_, a, b, name)
    print("| beta dies (udp overlay, TTL 5 s, podEvictionTimeout 1 s) | seconds |")
    print("|---|---|")
    print(f"| its RC pods ready on alpha | {ready_at:.1f} |" if ready_at else "| its RC pods ready on alpha | > 120 |")
    print(f"| the service answers from all four again | {serving_at:.1f} |" if serving_at else "| the service answers from all four again | > 120 |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--pods", type=int, default=2500)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["paths", "pods", "failover"])
    args = ap.parse_args()
    bin_ = os.path.abspath(args.bin)
    with tempfile.TemporaryDirectory() as dir_:
        os.chmod(dir_, 0o700)
        a, b = pair()
        etcd = start_etcd(a, dir_)
        try:
            if args.only in (None, "paths"):
                paths(bin_, a, b, dir_, args.seconds, args.reps)
            if args.only in (None, "pods"):
                many_pods(bin_, a, b, dir_, args.pods)
            if args.only in (None, "failover"):
                failover(bin_, a, b, dir_)
        finally:
            etcd.kill()
            etcd.wait()
            a.close()
            b.close()


if __name__ == "__main__":
    main()
