#!/usr/bin/env python3
"""Measures the accuracy of the built-in traffic generators.

Two network namespaces joined by a veth (made here, removed at the end);
`testbed serve` runs in one, and `testbed generate` (the generator the
experiment runner uses, `traffic::run`) sends from the other, open loop,
at 1,000 sends/s for 10 s, once per kind (http, tcpConnect, udpEcho, ping;
tcpStream: 1 stream sampled 1,000 times/s). Every send is a raw sample;
the table gives the achieved rate (sends over the time from the first to
the last actual send), the send-time jitter (actual minus scheduled send
time) at p50/p99/max, the latency at p50/p99 and the share of sends that
were ok.

The reference, measured at the same time as each generator (the machine is
shared, so its load changes from one minute to the next): a Python process
that sleeps until each of the same number of deadlines at the same rate
(time.sleep) and records how late it woke, i.e. the jitter of a plain
sleep-based sender doing no work at all.

Run as root from the repository after `cargo build --release`:

    python3 bench/traffic.py [--bin target/release/testbed] [--rate 1000] [--seconds 10]

Target (issue 11): at 1,000 requests/s for 10 s, p99 jitter under 1 ms.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
from common import sh  # noqa: E402

ID = f"btrf{os.getpid() % 100000}"
A, B = f"{ID}-a", f"{ID}-b"
ADDR_A, ADDR_B = "10.79.0.1", "10.79.0.2"
PORTS = {"http": 8080, "tcpConnect": 8081, "udpEcho": 8082, "tcpStream": 8083, "ping": 0}


def netns_up():
    sh("ip", "netns", "add", A)
    sh("ip", "netns", "add", B)
    sh("ip", "-n", A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", B)
    for ns, addr in ((A, ADDR_A), (B, ADDR_B)):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def netns_down():
    for ns in (A, B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def generate(bin_, kind, rate, seconds):
    out = sh(bin_, "generate", "--netns", A, "--kind", kind, "--to", ADDR_B,
             "--port", str(PORTS[kind]), "--rate", str(rate), "--seconds", str(seconds),
             "--timeout-ms", "1000", "--streams", "1")
    return [json.loads(line) for line in out.splitlines()]


# How late a plain sleep-until-deadline loop wakes, in microseconds: one
# number a line (argv: rate, seconds).
REFERENCE = """
import sys, time
rate, seconds = int(sys.argv[1]), int(sys.argv[2])
late = []
t0 = time.monotonic() + 0.05
for k in range(rate * seconds):
    due = t0 + k / rate
    d = due - time.monotonic()
    if d > 0:
        time.sleep(d)
    late.append((time.monotonic() - due) * 1e6)
print("\\n".join(f"{x:.0f}" for x in late))
"""


def reference(rate, seconds):
    """Starts the reference loop; `finish` returns its lateness list."""
    p = subprocess.Popen([sys.executable, "-c", REFERENCE, str(rate), str(seconds)],
                         stdout=subprocess.PIPE, text=True)

    def finish():
        out, _ = p.communicate()
        return [float(x) for x in out.split()]
    return finish


def spread(xs):
    return f"{pct(xs, 50):.0f} / {pct(xs, 99):.0f} / {max(xs):.0f}"


def row(name, n, rate, jitter, ref, latency, ok):
    lat = f"{pct(latency, 50) / 1000:.2f} / {pct(latency, 99) / 1000:.2f}" if latency else "-"
    return f"| {name} | {n} | {rate:.1f} | {spread(jitter)} | {spread(ref)} | {lat} | {ok} |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/testbed")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    bin_ = os.path.abspath(args.bin)
    netns_up()
    server = None
    try:
        server = subprocess.Popen(
            ["ip", "netns", "exec", B, bin_, "serve", "--name", "bench/server",
             "--http", "8080", "--tcp", "8081", "--udp", "8082", "--stream", "8083"],
            stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        print(f"{args.rate} sends/s for {args.seconds} s, load average before: "
              f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs\n")
        print("| generator | sends | achieved /s | jitter µs p50 / p99 / max "
              "| reference sleep loop, same time: µs p50 / p99 / max "
              "| latency ms p50 / p99 | ok |")
        print("|---|---|---|---|---|---|---|")
        for kind in ("http", "tcpConnect", "udpEcho", "ping", "tcpStream"):
            ref = reference(args.rate, args.seconds)
            s = generate(bin_, kind, args.rate, args.seconds)
            late = ref()
            sent = sorted(x["sentUs"] for x in s)
            achieved = (len(sent) - 1) / ((sent[-1] - sent[0]) / 1e6)
            jitter = [x["sentUs"] - x["sendUs"] for x in s]
            ok = sum(x["outcome"] == "ok" for x in s)
            latency = [x["latencyUs"] for x in s] if kind != "tcpStream" else []
            print(row(kind, len(s), achieved, jitter, late, latency, f"{100 * ok / len(s):.1f}%"),
                  flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    finally:
        if server:
            server.terminate()
            server.wait()
        netns_down()


if __name__ == "__main__":
    main()
