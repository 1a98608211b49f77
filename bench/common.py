"""What the benchmark scripts share: running a command, a testbed that is up
for the length of a `with` block, and finding a testbed's daemons."""
import contextlib
import json
import os
import subprocess
import sys
import tempfile

# A UDP echo server on port 7000 (a pod's container), and a client that
# prints the median round trip in microseconds of 300 64-byte pings to the
# address in argv[1].
ECHO = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',7000))\n"
        "while True:\n d,a=s.recvfrom(2048);s.sendto(d,a)")
PING = ("import socket,time,statistics,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1);r=[]\n"
        "for i in range(300):\n t=time.perf_counter();s.sendto(b'x'*64,(sys.argv[1],7000))\n"
        " try:\n  s.recv(2048);r.append(time.perf_counter()-t)\n except OSError: pass\n"
        "print(statistics.median(r)*1e6)")


def sh(*cmd, check=True, stdin=None):
    """The standard output of `cmd`; exits with its error if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {r.stderr}")
    return r.stdout


@contextlib.contextmanager
def testbed_up(bin_, yaml):
    """Writes topology `yaml` to a private temporary directory, brings it up
    and yields the file's path and the plan; brings it down on the way out."""
    with tempfile.TemporaryDirectory() as dir_:
        path = os.path.join(dir_, "topology.yaml")
        with open(path, "w") as f:
            f.write(yaml)
        plan = json.loads(sh(bin_, "plan", "--json", path))
        sh(bin_, "up", path, "--timeout", "60s")
        try:
            yield path, plan
        finally:
            sh(bin_, "down", plan["name"], check=False)


def daemon_pids(name, kind, node=None):
    """The pids of testbed `name`'s `testbed KIND NAME NODE` daemons (of
    `node`, or of every node)."""
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd[1:3] == [kind.encode(), name.encode()] and (node is None or cmd[3:4] == [node.encode()]):
                pids.append(int(p))
    return pids
