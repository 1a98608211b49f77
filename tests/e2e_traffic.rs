//! The generators on a real testbed: two pods of a replication controller
//! run `testbed serve` as their container command (a bare `testbed`, not in
//! the containers' `PATH`: the launching binary), and HTTP, udpEcho and
//! tcpConnect generators from a client pod through the service's cluster
//! IP are all answered, each by a backend named `NAMESPACE/POD` from
//! `TESTBED_POD`.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use support::Testbed;
use testbed::experiment::schedule::Sends;
use testbed::experiment::WorkloadKind;
use testbed::traffic::{self, Generator, SampleOutcome};

const TOPOLOGY: &str = "
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: client, node: n1, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - name: web
    replicas: 2
    selector: {app: web}
    template:
      labels: {app: web}
      containers:
        - name: serve
          command: [testbed, serve, --http, '8080', --udp, '9000', --tcp, '9001']
          env: {PATH: /nonexistent}
          ready: {tcp: 8080}
services:
  - name: web
    selector: {app: web}
    ports: [{name: http, port: 80, targetPort: 8080}, {name: echo, port: 90, targetPort: 9000, protocol: UDP}, {name: tcp, port: 91, targetPort: 9001}]
";

#[test]
fn generators_through_a_service_are_answered_by_serve_naming_its_pod() {
    if !overlay::require_root("generators_through_a_service") {
        return;
    }
    let tb = Testbed::new("trf", TOPOLOGY).up();
    let plan = testbed::load(&tb.file).expect("plan").plan;
    let vip = plan.services[0].cluster_ip;
    let web: BTreeSet<String> = plan
        .pods
        .iter()
        .filter(|p| p.name.starts_with("web"))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    assert_eq!(web.len(), 2, "{web:?}");
    let client = plan
        .pods
        .iter()
        .find(|p| p.name == "client")
        .expect("client");
    for (kind, port) in [
        (WorkloadKind::Http, 80),
        (WorkloadKind::UdpEcho, 90),
        (WorkloadKind::TcpConnect, 91),
    ] {
        let gen = Generator {
            workload: "w".into(),
            kind,
            source: "pod client".into(),
            netns: client.netns.clone(),
            addr: vip,
            port,
            path: "/".into(),
            sends: Sends {
                name: "w".into(),
                count: 100,
                start_us: 0,
                first_us: Vec::new(),
                rate: 200,
                phase_ppm: 0,
            },
            timeout: Duration::from_secs(1),
            streams: 1,
        };
        let t0 = Instant::now() + Duration::from_millis(20);
        let samples = traffic::run(&gen, t0, &AtomicBool::new(false)).expect("generator runs");
        assert_eq!(samples.len(), 100);
        let bad: Vec<_> = samples
            .iter()
            .filter(|s| s.outcome != SampleOutcome::Ok)
            .collect();
        assert!(bad.is_empty(), "{kind:?}: {bad:?}");
        let backends: BTreeSet<String> = samples.iter().filter_map(|s| s.backend.clone()).collect();
        // 100 new flows, balanced at random: both backends answer.
        assert_eq!(backends, web, "{kind:?}");
    }
}
