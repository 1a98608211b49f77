#!/usr/bin/env python3
"""Measures `testbed up` and `testbed down` at scale, against Mininet.

Builds topologies of 50 to 10,000 pods (host-gw overlay, one `sleep
infinity` container per pod, at most 125 pods per node: 10 nodes up to 1,000
pods, then 20, 40 and 80), brings each up and down and prints, per size, the
median up, down and total seconds, the peak memory of the testbed's own
processes (the `up` command and the supervisor), and the kernel memory the
testbed costs per pod (slab, kernel stacks, page tables and per-CPU memory
while it is up, less before). In the same run it times the reference:
Mininet creating and removing 200 hosts on one Linux bridge
(`mn --topo single,200 --switch lxbr --controller none --test none`), run in
a throwaway network and mount namespace so that it cannot touch this
machine's (Debian: `apt-get install mininet`; without it the table says so).

Run as root from the repository, after `cargo build --release`:

    sudo python3 bench/updown.py [--runs 3] [--sizes 50,200,1000,2500,5000,10000]
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KERNEL_FIELDS = ("Slab", "KernelStack", "PageTables", "Percpu")


def nodes_for(pods):
    return max(10, -(-pods // 125))


def topology(name, pods):
    nodes = nodes_for(pods)
    lines = [f"name: {name}", "cluster: {overlay: host-gw}", "nodes:"]
    lines += [f"  - name: node{i}" for i in range(1, nodes + 1)]
    lines.append("pods:")
    for i in range(pods):
        lines.append(f"  - {{name: p{i}, containers: [{{name: c, command: [sleep, infinity]}}]}}")
    return "\n".join(lines) + "\n"


def run(cmd, timeout=900):
    t = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
    return time.monotonic() - t


def kernel_kib():
    """The kernel's own memory (KiB): slab, stacks, page tables, per-CPU."""
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            key, rest = line.split(":", 1)
            if key in KERNEL_FIELDS:
                total += int(rest.split()[0])
    return total


def supervisor_peak_mib(name):
    """The peak resident memory of the testbed's supervisor, from /proc."""
    try:
        with open(f"/run/testbed/{name}/supervisor.pid") as f:
            pid = json.load(f)["pid"]
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, KeyError):
        pass
    return 0.0


def settle():
    """Lets the kernel finish freeing the previous run's namespaces."""
    time.sleep(3)


def mininet_seconds(runs):
    """Mininet creating and removing 200 hosts, median of `runs`, or None."""
    if shutil.which("mn") is None:
        return None
    script = ("mount -t tmpfs tmpfs /run && ip link set lo up && "
              "mn --topo single,200 --switch lxbr --controller none --test none")
    times = []
    for _ in range(runs):
        settle()
        t = time.monotonic()
        r = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                            "sh", "-c", script], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=900)
        if r.returncode != 0:
            sys.exit(f"mininet failed: {r.stderr[-2000:]}")
        times.append(time.monotonic() - t)
    return statistics.median(times)


def measure(binary, size, runs):
    name = f"bench{size}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "topology.yaml")
        with open(path, "w") as f:
            f.write(topology(name, size))
        subprocess.run([binary, "down", name], capture_output=True)
        ups, downs, sup, per_pod = [], [], 0.0, []
        for _ in range(runs):
            settle()
            before = kernel_kib()
            ups.append(run([binary, "up", path, "--timeout", "600s"]))
            per_pod.append((kernel_kib() - before) / size)
            sup = max(sup, supervisor_peak_mib(name))
            downs.append(run([binary, "down", name]))
    up, down = statistics.median(ups), statistics.median(downs)
    return {"pods": size, "nodes": nodes_for(size), "upS": round(up, 3),
            "downS": round(down, 3), "totalS": round(up + down, 3),
            "supervisorMib": round(sup, 1),
            "kernelKibPerPod": round(statistics.median(per_pod), 1), "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per size (median)")
    ap.add_argument("--big-runs", type=int, default=1, help="runs for 5,000 pods and more")
    ap.add_argument("--sizes", default="50,200,1000,2500,5000,10000")
    ap.add_argument("--mininet-runs", type=int, default=3)
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark creates network namespaces")
    reference = mininet_seconds(a.mininet_runs)
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        rows.append(measure(a.bin, size, a.big_runs if size >= 5000 else a.runs))
        print(f"  {size} pods done", file=sys.stderr, flush=True)
    cli_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if a.json:
        print(json.dumps({"mininet200S": reference, "cliPeakMib": round(cli_mib, 1),
                          "rows": rows}, indent=2))
        return
    ref = f"{reference:.2f} s" if reference else "not measured (mn not installed)"
    print(f"| pods | nodes | up s | down s | total s | vs Mininet 200 hosts | supervisor MiB | kernel KiB/pod |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['totalS'] / reference:.2f}x" if reference else "-"
        print(f"| {r['pods']:,} | {r['nodes']} | {r['upS']:.2f} | {r['downS']:.2f} | {r['totalS']:.2f} "
              f"| {ratio} | {r['supervisorMib']:.1f} | {r['kernelKibPerPod']:.0f} |")
    print(f"\nMininet, 200 hosts on one bridge, up and down: {ref} (median of {a.mininet_runs});"
          f" peak of the `up`/`down` commands: {cli_mib:.1f} MiB; medians of {a.runs} runs"
          f" ({a.big_runs} from 5,000 pods)")


if __name__ == "__main__":
    main()
