use super::*;
use crate::check::{Expect, Level};
use crate::plan::testutil::plan;
use std::time::Duration;

const TOPO: &str = "
name: t
nodes: [{name: n1}, {name: n2}]
hosts: [{name: outside}]
pods:
  - {name: a, node: n1, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: b, namespace: shop, node: n2, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: lonely, node: n1, network: none, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - {name: api, replicas: 2, selector: {app: api}, template: {labels: {app: api}, containers: [{name: c, command: [sleep, infinity]}]}}
services:
  - name: web
    namespace: shop
    type: NodePort
    selector: {app: web}
    ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
  - {name: api, selector: {app: api}, ports: [{port: 53, protocol: UDP}]}
  - {name: lb, type: LoadBalancer, selector: {app: api}, ports: [{port: 443}]}
";

fn ep(text: &str) -> Endpoint {
    match text.strip_prefix('{') {
        Some(_) => {
            let src = format!("checks: [{{name: x, from: {text}, to: address 1.1.1.1}}]");
            match crate::check::spec::read_file(&src, "c.yaml", None).unwrap()[0].kind {
                CheckKind::Pair { ref from, .. } => from.clone(),
                _ => unreachable!(),
            }
        }
        None => crate::check::spec::parse_endpoint(text).unwrap(),
    }
}

fn pair(from: &str, to: &str, port: Option<Port>) -> Check {
    Check {
        name: "x".into(),
        kind: CheckKind::Pair {
            from: ep(from),
            to: ep(to),
            port,
            expect: Expect::Allow,
            within: Duration::from_secs(5),
            hold: Duration::from_secs(1),
            body: None,
        },
        level: Level::Error,
    }
}

fn matrix(from: &str, to: &str, ignore_self: bool, table: Option<&[&str]>) -> Check {
    Check {
        name: "m".into(),
        kind: CheckKind::Matrix {
            from: ep(from),
            to: ep(to),
            port: Some(Port::Tcp(8080)),
            ignore_self,
            expect_table: table.map(|t| t.iter().map(|r| r.to_string()).collect()),
        },
        level: Level::Error,
    }
}

fn pod<'p>(p: &'p Plan, name: &str) -> &'p PodPlan {
    p.pods.iter().find(|x| x.name == name).unwrap()
}

/// (from, netns, to, addr, port) of every probe.
fn probes(r: &Resolved) -> Vec<(String, String, String, Ipv4Addr, Port)> {
    r.probes
        .iter()
        .map(|p| {
            (
                p.from.clone(),
                p.netns.clone(),
                p.to.clone(),
                p.addr,
                p.port.clone(),
            )
        })
        .collect()
}

#[test]
fn pod_to_pod_is_one_probe_from_its_namespace_to_its_ip() {
    let p = plan(TOPO);
    let r = resolve(&p, &pair("pod a", "pod b.shop", Some(Port::Tcp(8080)))).unwrap();
    let (a, b) = (pod(&p, "a"), pod(&p, "b"));
    assert_eq!(r.rows, ["pod a"]);
    assert_eq!(r.columns, ["pod shop/b"]);
    assert_eq!(
        probes(&r),
        [(
            "pod a".into(),
            a.netns.clone(),
            "pod shop/b".into(),
            b.ip.unwrap(),
            Port::Tcp(8080)
        )]
    );
}

#[test]
fn no_port_is_icmp_to_pods_nodes_hosts_and_addresses() {
    let p = plan(TOPO);
    let n2 = &p.nodes[1];
    let h = &p.hosts[0];
    let r = resolve(&p, &pair("node n1", "node n2", None)).unwrap();
    assert_eq!(
        probes(&r),
        [(
            "node n1".into(),
            p.nodes[0].netns.clone(),
            "node n2".into(),
            n2.ip,
            Port::Icmp
        )]
    );
    let r = resolve(&p, &pair("host outside", "host outside", None)).unwrap();
    assert_eq!(
        probes(&r),
        [(
            "host outside".into(),
            h.netns.clone(),
            "host outside".into(),
            h.ip,
            Port::Icmp
        )]
    );
    let r = resolve(&p, &pair("pod a", "address 10.9.8.7", None)).unwrap();
    assert_eq!(r.probes[0].addr, Ipv4Addr::new(10, 9, 8, 7));
    assert_eq!(r.columns, ["address 10.9.8.7"]);
}

#[test]
fn selectors_expand_in_plan_order() {
    let p = plan(TOPO);
    let r = resolve(&p, &pair("{pods: {app: web}}", "pod a", None)).unwrap();
    assert_eq!(r.rows, ["pod a", "pod shop/b", "pod lonely"]);
    assert_eq!(r.probes.len(), 3);
    assert_eq!(r.probes[2].netns, pod(&p, "lonely").netns);
    let r = resolve(&p, &pair("{rc: api}", "pod a", None)).unwrap();
    assert_eq!(r.rows, ["pod api-0", "pod api-1"]);
    let r = resolve(&p, &pair("{allNodes: true}", "{allHosts: true}", None)).unwrap();
    assert_eq!(r.rows, ["node n1", "node n2"]);
    assert_eq!(r.columns, ["host outside"]);
    let r = resolve(&p, &pair("{allPods: true}", "pod a", None)).unwrap();
    assert_eq!(r.rows.len(), p.pods.len());
}

#[test]
fn a_pod_without_an_address_is_no_target() {
    let p = plan(TOPO);
    let e = resolve(&p, &pair("pod a", "pod lonely", None))
        .unwrap_err()
        .0;
    assert!(
        e.contains("pod lonely has no IP address (network: none)"),
        "{e}"
    );
    // A selector leaves it out of the targets, but it still sends.
    let r = resolve(&p, &pair("{allPods: true}", "{pods: {app: web}}", None)).unwrap();
    assert_eq!(r.columns, ["pod a", "pod shop/b"]);
    assert!(r.rows.contains(&"pod lonely".to_string()));
}

#[test]
fn services_are_probed_on_their_cluster_ip_and_port() {
    let p = plan(TOPO);
    let web = &p.services[0];
    let r = resolve(&p, &pair("pod a", "service web.shop", None)).unwrap();
    assert_eq!(r.columns, ["service shop/web"]);
    assert_eq!(
        (r.probes[0].addr, r.probes[0].port.clone()),
        (web.cluster_ip, Port::Tcp(80))
    );
    let r = resolve(&p, &pair("pod a", "service api", None)).unwrap();
    assert_eq!(r.columns, ["service api"]);
    assert_eq!(
        r.probes[0].port,
        Port::Udp(53),
        "a UDP first port is probed over UDP"
    );
    let r = resolve(&p, &pair("pod a", "service web.shop", Some(Port::Udp(53)))).unwrap();
    assert_eq!(r.probes[0].port, Port::Udp(53));
    let http = Port::Http {
        port: 80,
        path: "/x".into(),
    };
    let r = resolve(&p, &pair("pod a", "service web.shop", Some(http.clone()))).unwrap();
    assert_eq!(r.probes[0].port, http);
    let e = resolve(&p, &pair("pod a", "service web.shop", Some(Port::Tcp(81))))
        .unwrap_err()
        .0;
    assert_eq!(
        e,
        "service shop/web has no TCP port 81 (its ports: 80/TCP, 53/UDP)"
    );
    let e = resolve(&p, &pair("pod a", "service nope", None))
        .unwrap_err()
        .0;
    assert_eq!(e, "no service nope");
}

#[test]
fn node_ports_go_to_the_nodes_lan_address() {
    let p = plan(TOPO);
    let web = &p.services[0];
    let node_port = web.ports[0].node_port.unwrap();
    let r = resolve(&p, &pair("host outside", "nodePort web.shop via n2", None)).unwrap();
    assert_eq!(r.columns, ["nodePort shop/web via n2"]);
    assert_eq!(
        (r.probes[0].addr, r.probes[0].port.clone()),
        (p.nodes[1].ip, Port::Tcp(node_port))
    );
    let udp = web.ports[1].node_port.unwrap();
    let r = resolve(
        &p,
        &pair(
            "host outside",
            "nodePort web.shop via n1",
            Some(Port::Udp(53)),
        ),
    )
    .unwrap();
    assert_eq!(
        (r.probes[0].addr, r.probes[0].port.clone()),
        (p.nodes[0].ip, Port::Udp(udp))
    );
    let r = resolve(
        &p,
        &pair(
            "host outside",
            "nodePort web.shop via n1",
            Some(Port::Http {
                port: 80,
                path: "/".into(),
            }),
        ),
    )
    .unwrap();
    assert_eq!(
        r.probes[0].port,
        Port::Http {
            port: node_port,
            path: "/".into()
        }
    );
    let e = resolve(&p, &pair("host outside", "nodePort api via n1", None))
        .unwrap_err()
        .0;
    assert!(
        e.contains("service api has no node port (type ClusterIP)"),
        "{e}"
    );
    let e = resolve(&p, &pair("host outside", "nodePort web.shop via n3", None))
        .unwrap_err()
        .0;
    assert_eq!(e, "no node n3");
}

#[test]
fn external_goes_to_the_load_balancer_ip() {
    let p = plan(TOPO);
    let lb = &p.services[2];
    let r = resolve(&p, &pair("host outside", "external lb", None)).unwrap();
    assert_eq!(r.columns, ["external lb"]);
    assert_eq!(
        (Some(r.probes[0].addr), r.probes[0].port.clone()),
        (lb.load_balancer_ip, Port::Tcp(443))
    );
    let e = resolve(&p, &pair("host outside", "external api", None))
        .unwrap_err()
        .0;
    assert!(e.contains("no external IP"), "{e}");
}

#[test]
fn names_the_plan_does_not_hold_are_errors() {
    let p = plan(TOPO);
    for (from, to, want) in [
        ("pod zz", "pod a", "no pod zz"),
        ("pod a", "pod b", "no pod b"),
        ("node n9", "pod a", "no node n9"),
        ("host h9", "pod a", "no host h9"),
        ("pod a", "host h9", "no host h9"),
        (
            "{pods: {app: nope}}",
            "pod a",
            "no pod has the labels {app: nope}",
        ),
        (
            "{rc: web}",
            "pod a",
            "replication controller web has no pods",
        ),
        ("service web.shop", "pod a", "cannot send"),
    ] {
        let e = resolve(&p, &pair(from, to, None)).unwrap_err().0;
        assert!(e.contains(want), "{from} -> {to}: {e}");
    }
}

#[test]
fn a_matrix_is_row_by_row_and_skips_self_when_asked() {
    let p = plan(TOPO);
    let r = resolve(
        &p,
        &matrix("{pods: {app: web}}", "{pods: {app: web}}", true, None),
    )
    .unwrap();
    assert_eq!(r.rows, ["pod a", "pod shop/b", "pod lonely"]);
    assert_eq!(r.columns, ["pod a", "pod shop/b"]);
    let pairs: Vec<(&str, &str)> = r
        .probes
        .iter()
        .map(|p| (p.from.as_str(), p.to.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("pod a", "pod shop/b"),
            ("pod shop/b", "pod a"),
            ("pod lonely", "pod a"),
            ("pod lonely", "pod shop/b"),
        ]
    );
    assert!(r.probes.iter().all(|p| p.port == Port::Tcp(8080)));
    let r = resolve(
        &p,
        &matrix("{pods: {app: web}}", "{pods: {app: web}}", false, None),
    )
    .unwrap();
    assert_eq!(r.probes.len(), 6);
}

#[test]
fn an_expect_table_must_fit_the_matrix() {
    let p = plan(TOPO);
    let ok = matrix(
        "{pods: {app: web}}",
        "{pods: {app: web}}",
        true,
        Some(&["..", "..", "XX"]),
    );
    assert!(resolve(&p, &ok).is_ok());
    let short = matrix(
        "{pods: {app: web}}",
        "{pods: {app: web}}",
        true,
        Some(&["..", ".."]),
    );
    assert_eq!(
        resolve(&p, &short).unwrap_err().0,
        "`expectTable` is 2 rows by 2 columns, but the matrix is 3 rows (from: pod a, pod shop/b, pod lonely) by 2 columns (to: pod a, pod shop/b)"
    );
    let wide = matrix(
        "{pods: {app: web}}",
        "{pods: {app: web}}",
        true,
        Some(&["...", "...", "..."]),
    );
    assert!(resolve(&p, &wide)
        .unwrap_err()
        .0
        .contains("3 rows by 3 columns"));
}

#[test]
fn a_replication_controller_outside_default_is_found_as_pick_finds_it() {
    let src = TOPO.replace(
        "  - {name: api, replicas: 2,",
        "  - {name: cart, namespace: shop, replicas: 1, selector: {app: cart}, template: {labels: {app: cart}, containers: [{name: c, command: [sleep, infinity]}]}}\n  - {name: api, replicas: 2,",
    );
    let p = plan(&src);
    let r = resolve(&p, &pair("{rc: cart}", "pod a", None)).unwrap();
    assert_eq!(r.rows, vec!["pod shop/cart-0".to_string()]);
}
