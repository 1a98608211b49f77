//! Services in the iptables, nftables and userspace modes, for real: cluster IPs by name from pods on
//! every node and from a node, random spread over the endpoints, node ports
//! and the external IP from a host outside the cluster, ClientIP affinity,
//! hairpin, UDP, and ports without endpoints refused at once; in userspace
//! mode, the proxy's own ports refuse whatever no portal sent there.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{daemon_pid, ok, testbed, Testbed};

const TOPO: &str = "
cluster: {overlay: OVERLAY, proxy: PROXY}
nodes: [{name: node1}, {name: node2}]
hosts: [{name: client, containers: [{name: c, command: [sleep, infinity]}]}]
replicationControllers:
  - name: web
    replicas: 3
    selector: {app: web}
    template:
      labels: {app: web}
      volumes: [{name: www}]
      containers:
        - {name: http, command: [sh, -c, 'hostname > index.html && exec python3 -m http.server 8080'], workingDir: /srv, volumeMounts: [{name: www, mountPath: /srv}], ready: {tcp: 8080}}
        - name: echo
          command: [python3, -c, \"import socket,os\\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',9000))\\nwhile True:\\n d,a=s.recvfrom(100);s.sendto(os.uname()[1].encode(),a)\"]
pods:
  - {name: tester, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: tester2, node: node2, containers: [{name: c, command: [sleep, infinity]}]}
services:
  - name: web
    type: LoadBalancer
    selector: {app: web}
    ports:
      - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
      - {name: echo, port: 53, targetPort: 9000, protocol: UDP}
  - name: sticky
    selector: {app: web}
    sessionAffinity: ClientIP
    ports: [{port: 80, targetPort: 8080}]
  - {name: empty, selector: {app: nothing}, ports: [{port: 80}]}
";

fn exec(tb: &Testbed, target: &str, cmd: &[&str]) -> (i32, String) {
    let mut args = vec!["exec", "-t", &tb.name, target, "--"];
    args.extend_from_slice(cmd);
    let out = testbed(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Runs `n` HTTP requests from `target` to `url` in one process and counts
/// the answers (each backend answers its own name).
fn spread(tb: &Testbed, target: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!(
        "import urllib.request,collections\nc=collections.Counter()\nfor i in range({n}):\n try: c[urllib.request.urlopen('{url}',timeout=3).read().decode().strip()]+=1\n except Exception as e: c['error:'+type(e).__name__]+=1\nfor k,v in sorted(c.items()): print(k,v)"
    );
    let (code, out) = exec(tb, target, &["python3", "-c", &script]);
    assert_eq!(code, 0, "{target} -> {url}: {out}");
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

fn services(overlay: &str, proxy: &str) {
    let tb = Testbed::new(
        "svc",
        &TOPO.replace("OVERLAY", overlay).replace("PROXY", proxy),
    )
    .up();
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&["plan", "--json", tb.file.to_str().expect("path")]))
            .expect("plan");
    let lb = plan["services"][0]["loadBalancerIP"]
        .as_str()
        .expect("external IP")
        .to_string();

    // `up` returns with services that answer: the very first request works.
    let (code, body) = exec(
        &tb,
        "tester",
        &["curl", "-s", "-m", "3", "http://web.default.svc/"],
    );
    assert!(
        code == 0 && body.starts_with("web-"),
        "first request after up: {code} {body}"
    );
    // Cluster IP by name from pods on both nodes: 300 connections reach
    // every backend, each within a generous bound of a third.
    for from in ["tester", "tester2"] {
        let counts = spread(&tb, from, "http://web.default.svc/", 300);
        assert_eq!(counts.len(), 3, "{from}: {counts:?}");
        for (backend, n) in &counts {
            assert!(
                (60..=140).contains(n),
                "{from}: {backend} got {n} of 300: {counts:?}"
            );
        }
    }
    // By IP too, from a pod on each node.
    let vip = plan["services"][0]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    for from in ["tester", "tester2"] {
        let (code, body) = exec(
            &tb,
            from,
            &["curl", "-s", "-m", "3", &format!("http://{vip}/")],
        );
        assert!(
            code == 0 && body.starts_with("web-"),
            "{from} -> {vip}: {code} {body}"
        );
    }
    // From a node itself.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("node.node1"),
            "curl",
            "-s",
            "-m",
            "3",
        ])
        .arg(format!(
            "http://{}/",
            plan["services"][0]["clusterIP"]
                .as_str()
                .expect("cluster IP")
        ))
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("web-"),
        "node to cluster IP"
    );
    // Node port on every node, and the external IP, from a host.
    for url in [
        "http://node1:30080/",
        "http://node2:30080/",
        &format!("http://{lb}/"),
    ] {
        let (code, body) = exec(&tb, "client", &["curl", "-s", "-m", "3", url]);
        assert!(
            code == 0 && body.starts_with("web-"),
            "client -> {url}: {code} {body}"
        );
    }
    // ClientIP affinity: one client, one backend.
    let counts = spread(&tb, "tester", "http://sticky/", 30);
    assert_eq!(counts.len(), 1, "affinity: {counts:?}");
    // Hairpin: a backend reaching its own service, and through it itself.
    let counts = spread(&tb, "web-0", "http://web/", 30);
    assert!(
        counts.contains_key("web-0"),
        "hairpin to itself: {counts:?}"
    );
    // UDP.
    let (code, out) = exec(&tb, "tester", &["python3", "-c", "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);s.sendto(b'x',('web',53));print(s.recv(100).decode())"]);
    assert!(
        code == 0 && out.starts_with("web-"),
        "UDP service: {code} {out}"
    );
    // No endpoints: refused at once, no hang.
    let started = Instant::now();
    let (code, _) = exec(&tb, "tester", &["curl", "-s", "-m", "5", "http://empty/"]);
    assert_eq!(code, 7, "curl: connection refused");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // What the kernel holds, node by node, is the mode's rule set.
    let installed = ok(&["inspect", &tb.name, "--rules"]);
    let marker = match proxy {
        "nftables" => "numgen random mod 3 map",
        "userspace" => "-j REDIRECT --to-ports",
        _ => "-m statistic --mode random --probability 0.333333333",
    };
    assert_eq!(installed.matches("# node ").count(), 2, "{installed}");
    assert_eq!(installed.matches(marker).count() % 2, 0, "{installed}");
    assert!(installed.contains(marker), "{installed}");
    assert!(ok(&["verify", &tb.name]).contains("matches"));
    if proxy == "userspace" {
        proxy_ports_refuse_direct_traffic(&tb, &plan);
    }
}

/// Tries each `address:port:tcp|udp` and prints it with `open` (a TCP
/// connection was accepted), `answered` (a UDP reply came), `refused` (a
/// reset or ICMP port unreachable) or what else happened. A UDP probe
/// that hears nothing is sent again: the kernel sends a peer at most 6
/// ICMP errors at once, then one a second.
const PROBE: &str = "import socket,sys
def udp(a,p):
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1.5); s.connect((a,p))
    for i in range(3):
        try:
            s.send(b'x'); s.recv(100); return 'answered'
        except socket.timeout: pass
    return 'timeout'
def probe(a,p,proto):
    try:
        if proto=='tcp':
            socket.create_connection((a,p),timeout=2).close(); return 'open'
        return udp(a,p)
    except ConnectionRefusedError: return 'refused'
    except Exception as e: return type(e).__name__
for t in sys.argv[1:]:
    a,p,proto=t.split(':'); print(t, probe(a,int(p),proto), flush=True)";

/// The userspace proxy listens on 0.0.0.0 (20000 upwards) in each node's
/// namespace, but only traffic a portal rule sent there reaches it: a LAN
/// host, a pod (at the node's LAN address, or at its bridge address, where
/// the portals redirect to) and the node itself (at 127.0.0.1, where its
/// own portals DNAT to) are refused, TCP and UDP, while the same services
/// answer through their service addresses.
fn proxy_ports_refuse_direct_traffic(tb: &Testbed, plan: &serde_json::Value) {
    let services = testbed::load(&tb.file).expect("valid").plan.services;
    let listen = proxy::portals::listen_ports(&services);
    let port_of = |id: &str| {
        listen
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no listen port for {id}: {listen:?}"))
    };
    let (http, dns) = (port_of("default/web:80/tcp"), port_of("default/web:53/udp"));
    let node = |i: usize, field: &str| -> String {
        let v = match field {
            "ip" => &plan["nodes"][i]["ip"],
            _ => &plan["nodes"][i]["bridge"]["addresses"][0],
        };
        let s = v.as_str().expect("address");
        s.split('/').next().unwrap_or(s).to_string()
    };
    let (n1, n2, bridge1) = (node(0, "ip"), node(1, "ip"), node(0, "bridge"));
    let vip = plan["services"][0]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    let cases: Vec<(&str, Vec<(String, &str)>)> = vec![
        (
            "host:client",
            vec![
                (format!("{n1}:{http}:tcp"), "refused"),
                (format!("{n1}:{dns}:udp"), "refused"),
                (format!("{n2}:{http}:tcp"), "refused"),
                (format!("{n2}:{dns}:udp"), "refused"),
                (format!("{n1}:30080:tcp"), "open"),
            ],
        ),
        (
            "tester",
            vec![
                (format!("{bridge1}:{http}:tcp"), "refused"),
                (format!("{bridge1}:{dns}:udp"), "refused"),
                (format!("{n1}:{http}:tcp"), "refused"),
                (format!("{n2}:{dns}:udp"), "refused"),
                (format!("{vip}:80:tcp"), "open"),
                (format!("{vip}:53:udp"), "answered"),
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (from, probes) in &cases {
        let mut args = vec!["python3", "-c", PROBE];
        args.extend(probes.iter().map(|(t, _)| t.as_str()));
        let (code, out) = exec(tb, from, &args);
        assert_eq!(code, 0, "{from}: {out}");
        for (target, want) in probes {
            let line = format!("{target} {want}");
            if !out.lines().any(|l| l == line) {
                wrong.push(format!("{from} -> {target}: want {want}, got {out:?}"));
            }
        }
    }
    // The node itself, at the loopback address its portals DNAT to.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("node.node1"),
            "python3",
            "-c",
            PROBE,
        ])
        .args([
            format!("127.0.0.1:{http}:tcp"),
            format!("127.0.0.1:{dns}:udp"),
            format!("{vip}:80:tcp"),
        ])
        .output()
        .expect("probe from the node");
    let out = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("127.0.0.1:{http}:tcp refused"),
        format!("127.0.0.1:{dns}:udp refused"),
        format!("{vip}:80:tcp open"),
    ] {
        if !out.lines().any(|l| l == want) {
            wrong.push(format!("node1: want {want}, got {out:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn services_over_the_udp_overlay() {
    services("udp", "iptables");
}

#[test]
fn services_over_host_gw() {
    services("host-gw", "iptables");
}

#[test]
fn services_in_nftables_mode() {
    services("udp", "nftables");
}

#[test]
fn services_in_userspace_mode() {
    services("udp", "userspace");
}

/// In userspace mode the proxy takes the backends round-robin in an order
/// shuffled with the topology's seed: two runs of the same file see the
/// same sequence of backends.
#[test]
fn userspace_backend_sequence_repeats_with_the_seed() {
    let topo = "
seed: 42
cluster: {proxy: userspace}
nodes: [{name: node1}, {name: node2}]
replicationControllers:
  - name: web
    replicas: 4
    selector: {app: web}
    template:
      labels: {app: web}
      volumes: [{name: www}]
      containers:
        - {name: http, command: [sh, -c, 'hostname > index.html && exec python3 -m http.server 8080'], workingDir: /srv, volumeMounts: [{name: www, mountPath: /srv}], ready: {tcp: 8080}}
pods:
  - {name: tester, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
";
    let script = "import urllib.request\nfor i in range(12): print(urllib.request.urlopen('http://web/',timeout=3).read().decode().strip())";
    let run = || {
        let tb = Testbed::new("seq", topo).up();
        let (code, out) = exec(&tb, "tester", &["python3", "-c", script]);
        assert_eq!(code, 0, "{out}");
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 12, "{first:?}");
    // Round-robin: every four requests visit each backend once.
    for round in first.chunks(4) {
        let mut r = round.to_vec();
        r.sort();
        assert_eq!(r, ["web-0", "web-1", "web-2", "web-3"], "{first:?}");
    }
    assert_eq!(first[..4], first[4..8], "the same order every round");
    assert_eq!(run(), first, "the same seed, the same backends");
}

/// The testbed heals itself: a node's overlay daemon and userspace proxy
/// killed with SIGKILL are started again, and the service works again.
#[test]
fn killed_daemons_are_started_again() {
    let tb = Testbed::new(
        "heal",
        "
cluster: {overlay: udp, proxy: userspace}
nodes: [{name: node1}, {name: node2}]
pods:
  - {name: tester, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
  - name: web
    node: node2
    labels: {app: web}
    volumes: [{name: www}]
    containers:
      - {name: http, command: [sh, -c, 'hostname > index.html && exec python3 -m http.server 8080'], workingDir: /srv, volumeMounts: [{name: www, mountPath: /srv}], ready: {tcp: 8080}}
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
",
    )
    .up();
    let get = || exec(&tb, "tester", &["curl", "-s", "-m", "2", "http://web/"]);
    assert_eq!(get(), (0, "web".to_string()));
    let mut before = Vec::new();
    for kind in ["overlay-daemon", "proxy-daemon"] {
        let pid = daemon_pid(&tb.name, kind, "node1").unwrap_or_else(|| panic!("no {kind}"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        before.push((kind, pid));
    }
    let killed = Instant::now();
    loop {
        let again = before
            .iter()
            .all(|(kind, old)| daemon_pid(&tb.name, kind, "node1").is_some_and(|pid| pid != *old));
        if again && get() == (0, "web".to_string()) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "not healed: {:?}",
            get()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("healed within {:?}", killed.elapsed());
    assert!(ok(&["verify", &tb.name]).contains("matches"));
}

/// A UDP client that keeps one socket is not stuck with an endpoint that
/// left: its flow moves to another backend (iptables and nftables modes
/// clear the flow from connection tracking; the userspace proxy moves its
/// session).
fn udp_flow_moves(proxy: &str) {
    let echo = "[python3, -c, \"import socket,os\\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',9000))\\nwhile True:\\n d,a=s.recvfrom(100);s.sendto(os.uname()[1].encode(),a)\"]";
    let http = "[testbed, serve, --http, '8080']";
    let tb = Testbed::new(
        "udpmv",
        &format!(
            "
cluster: {{proxy: {proxy}}}
nodes: [{{name: node1}}, {{name: node2}}]
pods:
  - {{name: client, containers: [{{name: c, command: [sleep, infinity]}}]}}
  - name: a
    labels: {{app: echo}}
    containers:
      - {{name: http, command: {http}, restartPolicy: Never, ready: {{tcp: 8080}}}}
      - {{name: echo, command: {echo}}}
  - name: b
    labels: {{app: echo}}
    containers:
      - {{name: http, command: {http}, restartPolicy: Never, ready: {{tcp: 8080}}}}
      - {{name: echo, command: {echo}}}
services:
  - {{name: echo, selector: {{app: echo}}, ports: [{{port: 53, targetPort: 9000, protocol: UDP}}]}}
"
        ),
    )
    .up();
    // One socket, a datagram every 100 ms for 6 s; each answer is printed
    // as it comes.
    let script = "import socket,sys,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.3)\nfor i in range(60):\n s.sendto(b'x',('echo',53))\n try: print(s.recv(100).decode(),flush=True)\n except Exception: print('timeout',flush=True)\n time.sleep(0.1)";
    let mut child = std::process::Command::new(support::bin())
        .args([
            "exec", "-t", &tb.name, "client", "--", "python3", "-c", script,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let first = lines.next().and_then(Result::ok).expect("a first answer");
    assert!(first == "a" || first == "b", "{first}");
    // The pod answering stops being ready (its server dies; its echo
    // container lives on, so only a flow that moved stops hearing it).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_of(&tb, &first)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    let tail = &rest[rest.len().saturating_sub(20)..];
    assert!(
        rest.len() > 40 && tail.iter().all(|l| l != &first && l != "timeout"),
        "the flow stayed with {first}: {rest:?}"
    );
}

#[test]
fn udp_flows_leave_a_removed_endpoint() {
    udp_flow_moves("iptables");
}

#[test]
fn udp_flows_leave_a_removed_endpoint_in_nftables_mode() {
    udp_flow_moves("nftables");
}

#[test]
fn udp_flows_leave_a_removed_endpoint_in_userspace_mode() {
    udp_flow_moves("userspace");
}

fn pid_of(tb: &Testbed, pod: &str) -> i32 {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["status", &tb.name, "--json"])).expect("status");
    v[0]["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["name"] == pod)
        .and_then(|p| p["containers"][0]["pid"].as_i64())
        .unwrap_or_else(|| panic!("no running container in {pod}")) as i32
}

#[test]
fn endpoints_follow_pods() {
    endpoints_follow("iptables");
}

#[test]
fn endpoints_follow_pods_in_nftables_mode() {
    endpoints_follow("nftables");
}

#[test]
fn endpoints_follow_pods_in_userspace_mode() {
    endpoints_follow("userspace");
}

fn endpoints_follow(proxy: &str) {
    // The page names the pod, written in a volume (not the host's /tmp).
    let http = "[sh, -c, 'hostname > index.html && exec python3 -m http.server 8080'], workingDir: /srv, volumeMounts: [{name: www, mountPath: /srv}]";
    let tb = Testbed::new(
        "eps",
        &format!(
            "
cluster: {{proxy: {proxy}}}
nodes: [{{name: node1}}, {{name: node2}}]
pods:
  - {{name: client, containers: [{{name: c, command: [sleep, infinity]}}]}}
  - {{name: once, labels: {{app: web}}, volumes: [{{name: www}}], containers: [{{name: http, command: {http}, restartPolicy: Never, ready: {{tcp: 8080}}}}]}}
  - {{name: again, labels: {{app: web}}, volumes: [{{name: www}}], containers: [{{name: http, command: {http}, ready: {{tcp: 8080}}}}]}}
  - {{name: steady, labels: {{app: web}}, volumes: [{{name: www}}], containers: [{{name: http, command: {http}, ready: {{tcp: 8080}}}}]}}
services:
  - {{name: web, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"
        ),
    )
    .up();
    assert_eq!(spread(&tb, "client", "http://web/", 60).len(), 3);
    let kill = |pod: &str| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid_of(&tb, pod)),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
    };
    if proxy == "nftables" {
        // Someone removed the table on every node: the next update cannot
        // apply, so the follower loads the whole table again.
        for node in ["node1", "node2"] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &tb.ns(&format!("node.{node}"))])
                .args(["nft", "delete", "table", "ip", "testbed"])
                .output()
                .expect("nft");
            assert!(out.status.success(), "{out:?}");
        }
    }
    // A pod that is gone for good leaves the rotation promptly: soon every
    // request succeeds and none reaches it.
    kill("once");
    let killed = Instant::now();
    loop {
        let counts = spread(&tb, "client", "http://web/", 20);
        if !counts.keys().any(|k| k == "once" || k.starts_with("error")) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "the dead pod stayed in rotation: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("endpoint removed within {:?}", killed.elapsed());
    let counts = spread(&tb, "client", "http://web/", 60);
    assert!(!counts.contains_key("once"), "{counts:?}");
    if proxy != "userspace" {
        // Its endpoint is gone from the rules installed on every node.
        let plan: serde_json::Value =
            serde_json::from_str(&ok(&["plan", "--json", tb.file.to_str().expect("path")]))
                .expect("plan");
        let ip = plan["pods"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "once"))
            .and_then(|p| p["ip"].as_str())
            .expect("once's address")
            .to_string();
        let installed = ok(&["inspect", &tb.name, "--rules"]);
        assert!(
            !installed.contains(&format!("{ip} ")) && !installed.contains(&format!("{ip}:")),
            "{installed}"
        );
        let status = ok(&["status", &tb.name, "--json"]);
        assert!(!status.contains(&format!("{ip}:8080")), "{status}");
    }
    assert_eq!(counts.values().sum::<usize>(), 60);
    assert!(!counts.keys().any(|k| k.starts_with("error")), "{counts:?}");
    // A pod that restarts comes back once it is ready again.
    kill("again");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = spread(&tb, "client", "http://web/", 30);
        assert!(!counts.contains_key("once"), "{counts:?}");
        if counts.contains_key("again")
            && counts.contains_key("steady")
            && !counts.keys().any(|k| k.starts_with("error"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted pod never came back: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
