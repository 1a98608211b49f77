use super::*;
use crate::diag::Diagnostic;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Decodes a checks file: the checks and every problem.
fn read(src: &str) -> (Vec<Check>, Vec<Diagnostic>) {
    let mut diags = Diagnostics::default();
    let root = crate::topology::yaml::parse(src).unwrap();
    let checks = decode_file(&root, &mut diags)
        .into_iter()
        .map(|d| d.check)
        .collect();
    (checks, diags.into_sorted())
}

/// The one check of a file that must decode cleanly.
fn one(src: &str) -> Check {
    let (checks, diags) = read(src);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(checks.len(), 1);
    checks.into_iter().next().unwrap()
}

/// The problems of a file with one bad check entry.
fn errors(entry: &str) -> Vec<Diagnostic> {
    let (_, diags) = read(&format!("checks:\n  - {entry}\n"));
    assert!(!diags.is_empty(), "{entry} was accepted");
    diags
}

/// The single error of a bad entry, at `path`, with `message` in its text.
fn error_at(entry: &str, path: &str, message: &str) -> Diagnostic {
    let diags = errors(entry);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = diags.into_iter().next().unwrap();
    assert_eq!(d.path, path, "{d:#?}");
    assert!(d.message.contains(message), "{d:#?}");
    assert!(d.help.is_some() && d.pos.line >= 1, "{d:#?}");
    d
}

fn pair(
    c: &Check,
) -> (
    &Endpoint,
    &Endpoint,
    &Option<Port>,
    Expect,
    Duration,
    Duration,
    &Option<String>,
) {
    match &c.kind {
        CheckKind::Pair {
            from,
            to,
            port,
            expect,
            within,
            hold,
            body,
        } => (from, to, port, *expect, *within, *hold, body),
        other => panic!("not a pair: {other:?}"),
    }
}

#[test]
fn every_field_of_a_pair_check() {
    let c = one("checks:
  - name: web-from-clients
    from: {pods: {app: toolbox}}
    to: service web.shop
    port: http/80/healthz
    expect: allow
    within: 10s
    body: web-
    level: warning
");
    assert_eq!(c.name, "web-from-clients");
    assert_eq!(c.level, Level::Warning);
    let (from, to, port, expect, within, hold, body) = pair(&c);
    assert_eq!(
        from,
        &Endpoint::Pods(BTreeMap::from([("app".into(), "toolbox".into())]))
    );
    assert_eq!(
        to,
        &Endpoint::Service {
            name: "web".into(),
            namespace: "shop".into()
        }
    );
    assert_eq!(
        port,
        &Some(Port::Http {
            port: 80,
            path: "/healthz".into()
        })
    );
    assert_eq!(expect, Expect::Allow);
    assert_eq!(within, Duration::from_secs(10));
    assert_eq!(hold, DEFAULT_HOLD);
    assert_eq!(body.as_deref(), Some("web-"));
}

#[test]
fn defaults_are_icmp_allow_5s_1s_error() {
    let c = one("checks: [{name: a, from: pod x, to: pod y}]");
    assert_eq!(c.level, Level::Error);
    let (from, _, port, expect, within, hold, body) = pair(&c);
    assert_eq!(
        from,
        &Endpoint::Pod {
            name: "x".into(),
            namespace: "default".into()
        }
    );
    assert_eq!(port, &None);
    assert_eq!(expect, Expect::Allow);
    assert_eq!((within, hold), (DEFAULT_WITHIN, DEFAULT_HOLD));
    assert_eq!(body, &None);
}

#[test]
fn deny_drop_reject_hold_for() {
    for (word, e) in [
        ("deny", Expect::Deny),
        ("drop", Expect::Drop),
        ("reject", Expect::Reject),
    ] {
        let c = one(&format!(
            "checks: [{{name: a, from: pod x, to: pod y, port: tcp/80, expect: {word}, for: 2500ms}}]"
        ));
        let (_, _, _, expect, within, hold, _) = pair(&c);
        assert_eq!(
            (expect, within, hold),
            (e, DEFAULT_WITHIN, Duration::from_millis(2500))
        );
    }
}

#[test]
fn every_endpoint_form() {
    let cases = [
        (
            "pod web",
            Endpoint::Pod {
                name: "web".into(),
                namespace: "default".into(),
            },
        ),
        (
            "pod web.shop",
            Endpoint::Pod {
                name: "web".into(),
                namespace: "shop".into(),
            },
        ),
        ("host outside", Endpoint::Host("outside".into())),
        ("node node1", Endpoint::Node("node1".into())),
        (
            "service web",
            Endpoint::Service {
                name: "web".into(),
                namespace: "default".into(),
            },
        ),
        (
            "nodePort web.shop via node2",
            Endpoint::NodePort {
                name: "web".into(),
                namespace: "shop".into(),
                node: "node2".into(),
            },
        ),
        (
            "external web",
            Endpoint::External {
                name: "web".into(),
                namespace: "default".into(),
            },
        ),
        (
            "address 192.168.0.10",
            Endpoint::Address(Ipv4Addr::new(192, 168, 0, 10)),
        ),
        ("{rc: web}", Endpoint::Rc("web".into())),
        ("{allPods: true}", Endpoint::AllPods),
        ("{allNodes: true}", Endpoint::AllNodes),
        ("{allHosts: true}", Endpoint::AllHosts),
        (
            "{pods: {app: web, tier: front}}",
            Endpoint::Pods(BTreeMap::from([
                ("app".into(), "web".into()),
                ("tier".into(), "front".into()),
            ])),
        ),
    ];
    for (text, want) in cases {
        let c = one(&format!(
            "checks: [{{name: a, from: pod x, to: {text}, port: tcp/80}}]"
        ));
        assert_eq!(pair(&c).1, &want, "{text}");
    }
}

#[test]
fn every_port_form() {
    let cases = [
        ("tcp/80", Port::Tcp(80)),
        ("udp/53", Port::Udp(53)),
        (
            "http/8080",
            Port::Http {
                port: 8080,
                path: "/".into(),
            },
        ),
        (
            "http/80/a/b?c=d",
            Port::Http {
                port: 80,
                path: "/a/b?c=d".into(),
            },
        ),
        ("icmp", Port::Icmp),
    ];
    for (text, want) in cases {
        assert_eq!(parse_port(text), Ok(want), "{text}");
    }
}

#[test]
fn bad_ports_are_located_and_explained() {
    let d = error_at(
        "{name: a, from: pod x, to: pod y, port: 80}",
        "checks[0].port",
        "does not say what to probe",
    );
    assert!(d.help.unwrap().contains("tcp/80"));
    let d = error_at(
        "{name: a, from: pod x, to: pod y, port: tpc/80}",
        "checks[0].port",
        "not a kind of probe",
    );
    assert!(d.help.unwrap().contains("did you mean `tcp`"));
    error_at(
        "{name: a, from: pod x, to: pod y, port: tcp/70000}",
        "checks[0].port",
        "from 1 to 65535",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, port: tcp/0}",
        "checks[0].port",
        "from 1 to 65535",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, port: tcp}",
        "checks[0].port",
        "from 1 to 65535",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, port: tcp/80/x}",
        "checks[0].port",
        "only `http` ports",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, port: \"http/80/a b\"}",
        "checks[0].port",
        "not a URL path",
    );
}

#[test]
fn bad_endpoints_are_located_and_explained() {
    let d = error_at(
        "{name: a, from: pod x, to: pdo y}",
        "checks[0].to",
        "not an endpoint",
    );
    assert!(d.help.unwrap().contains("did you mean `pod`"));
    error_at(
        "{name: a, from: pod x, to: pod}",
        "checks[0].to",
        "names nothing",
    );
    error_at(
        "{name: a, from: pod x, to: pod Web}",
        "checks[0].to",
        "not a pod name",
    );
    error_at(
        "{name: a, from: pod x, to: pod web.Shop}",
        "checks[0].to",
        "not a namespace name",
    );
    error_at(
        "{name: a, from: pod x, to: address 10.0.0}",
        "checks[0].to",
        "not an IPv4 address",
    );
    error_at(
        "{name: a, from: pod x, to: nodePort web, port: tcp/80}",
        "checks[0].to",
        "which node",
    );
    error_at(
        "{name: a, from: pod x, to: nodePort web via node1, port: icmp}",
        "checks[0].port",
        "not with `icmp`",
    );
    error_at(
        "{name: a, from: pod x, to: [pod y]}",
        "checks[0].to",
        "single value",
    );
}

#[test]
fn services_and_addresses_only_receive() {
    for from in [
        "service web",
        "nodePort web via n1",
        "external web",
        "address 10.0.0.1",
    ] {
        error_at(
            &format!("{{name: a, from: {from}, to: pod y}}"),
            "checks[0].from",
            "can only be in `to`",
        );
    }
}

#[test]
fn bad_selectors_are_located_and_explained() {
    let d = error_at(
        "{name: a, from: {allpods: true}, to: pod y}",
        "checks[0].from.allpods",
        "unknown field",
    );
    assert!(d.help.unwrap().contains("did you mean `allPods`"));
    error_at(
        "{name: a, from: {allPods: false}, to: pod y}",
        "checks[0].from.allPods",
        "selects nothing",
    );
    error_at(
        "{name: a, from: {allPods: yes}, to: pod y}",
        "checks[0].from.allPods",
        "true or false",
    );
    error_at(
        "{name: a, from: {allPods: true, allNodes: true}, to: pod y}",
        "checks[0].from",
        "exactly one field",
    );
    error_at(
        "{name: a, from: {pods: {}}, to: pod y}",
        "checks[0].from.pods",
        "by no label",
    );
    error_at(
        "{name: a, from: {pods: {app: -x}}, to: pod y}",
        "checks[0].from.pods.app",
        "label value",
    );
    error_at(
        "{name: a, from: {rc: Web}, to: pod y}",
        "checks[0].from.rc",
        "`Web`",
    );
}

#[test]
fn bad_names_and_missing_fields() {
    error_at(
        "{name: Web, from: pod x, to: pod y}",
        "checks[0].name",
        "`Web`",
    );
    error_at("{from: pod x, to: pod y}", "checks[0].name", "no `name`");
    error_at("{name: a, to: pod y}", "checks[0].from", "no `from`");
    error_at("{name: a, from: pod y}", "checks[0].to", "no `to`");
    let d = error_at(
        "{name: a, from: pod x, to: pod y, expcet: deny}",
        "checks[0].expcet",
        "unknown field",
    );
    assert!(d.help.unwrap().contains("did you mean `expect`"));
}

#[test]
fn duplicate_names_name_the_first() {
    let (checks, diags) = read(
        "checks:\n  - {name: a, from: pod x, to: pod y}\n  - {name: a, from: pod y, to: pod x}\n",
    );
    assert_eq!(checks.len(), 1);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].path, "checks[1]");
    assert!(
        diags[0].message.contains("already declared on line 2"),
        "{diags:#?}"
    );
}

#[test]
fn bad_expect_level_and_durations() {
    let d = error_at(
        "{name: a, from: pod x, to: pod y, expect: dney}",
        "checks[0].expect",
        "not one of the choices",
    );
    assert!(d.help.unwrap().contains("did you mean `deny`"));
    error_at(
        "{name: a, from: pod x, to: pod y, level: fatal}",
        "checks[0].level",
        "not one of the choices",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, within: 10}",
        "checks[0].within",
        "invalid",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, within: 2h}",
        "checks[0].within",
        "invalid",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, within: 3601s}",
        "checks[0].within",
        "longer than 3600s",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, for: 2s}",
        "checks[0].for",
        "does not apply",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, expect: deny, within: 2s}",
        "checks[0].within",
        "does not apply",
    );
}

#[test]
fn body_is_for_http_allow_only() {
    error_at(
        "{name: a, from: pod x, to: pod y, port: tcp/80, body: hi}",
        "checks[0].body",
        "only to an allow check",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, body: hi}",
        "checks[0].body",
        "only to an allow check",
    );
    error_at(
        "{name: a, from: pod x, to: pod y, port: http/80, expect: deny, body: hi}",
        "checks[0].body",
        "only to an allow check",
    );
}

#[test]
fn a_matrix_with_its_table() {
    let c = one("checks:
  - name: pod-matrix
    matrix: {from: {allPods: true}, to: {pods: {app: web}}, port: tcp/8080}
    ignoreSelf: true
    level: warning
    expectTable: |
      . X .
      X..

      ...
");
    assert_eq!(c.level, Level::Warning);
    assert_eq!(
        c.kind,
        CheckKind::Matrix {
            from: Endpoint::AllPods,
            to: Endpoint::Pods(BTreeMap::from([("app".into(), "web".into())])),
            port: Some(Port::Tcp(8080)),
            ignore_self: true,
            expect_table: Some(vec![".X.".into(), "X..".into(), "...".into()]),
        }
    );
    let c = one("checks: [{name: m, matrix: {from: {allNodes: true}, to: {allNodes: true}}}]");
    assert_eq!(
        c.kind,
        CheckKind::Matrix {
            from: Endpoint::AllNodes,
            to: Endpoint::AllNodes,
            port: None,
            ignore_self: false,
            expect_table: None,
        }
    );
}

#[test]
fn bad_matrices_are_located_and_explained() {
    let m = "matrix: {from: {allPods: true}, to: {allPods: true}}";
    error_at(
        &format!("{{name: m, {m}, expectTable: \".x\"}}"),
        "checks[0].expectTable",
        "`x`",
    );
    error_at(
        &format!("{{name: m, {m}, expectTable: \"..\\n.\"}}"),
        "checks[0].expectTable",
        "row 2",
    );
    error_at(
        &format!("{{name: m, {m}, expectTable: \"\"}}"),
        "checks[0].expectTable",
        "empty",
    );
    error_at(
        &format!("{{name: m, {m}, ignoreSelf: 1}}"),
        "checks[0].ignoreSelf",
        "true or false",
    );
    let d = error_at(
        &format!("{{name: m, {m}, from: pod x}}"),
        "checks[0].from",
        "not a field of a matrix check",
    );
    assert!(d.help.unwrap().contains("inside `matrix:`"));
    error_at(
        &format!("{{name: m, {m}, expect: deny}}"),
        "checks[0].expect",
        "not a field of a matrix check",
    );
    error_at(
        "{name: m, from: pod x, to: pod y, ignoreSelf: true}",
        "checks[0].ignoreSelf",
        "not a field",
    );
    error_at(
        "{name: m, matrix: {from: {allPods: true}}}",
        "checks[0].matrix.to",
        "no `to`",
    );
    error_at(
        "{name: m, matrix: {from: {allPods: true}, to: pod y, prot: tcp/1}}",
        "checks[0].matrix.prot",
        "unknown field",
    );
    error_at(
        "{name: m, matrix: {from: service s, to: pod y}}",
        "checks[0].matrix.from",
        "only be in `to`",
    );
}

#[test]
fn every_problem_in_one_run() {
    let (checks, diags) = read(
        "checks:
  - {name: a, from: pod x, to: pdo y}
  - {name: B, from: pod x, to: pod y, port: tcp/0}
  - {name: c, from: pod x, to: pod y}
",
    );
    assert_eq!(checks.len(), 1);
    let paths: Vec<&str> = diags.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["checks[0].to", "checks[1].name", "checks[1].port"]);
}

#[test]
fn a_checks_file_has_only_checks() {
    let (_, diags) = read("");
    assert!(diags[0].message.contains("empty"));
    let (_, diags) = read("chekcs: []\n");
    let mut paths: Vec<&str> = diags.iter().map(|d| d.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["", "chekcs"], "{diags:#?}");
    assert!(diags
        .iter()
        .any(|d| d.help.as_ref().unwrap().contains("did you mean `checks`")));
    let (_, diags) = read("checks: {name: a}\n");
    assert!(diags[0].message.contains("must be a list"), "{diags:#?}");
}

#[test]
fn read_file_renders_located_errors() {
    let Err(e) = read_file(
        "checks:\n  - {name: a, from: pod x, to: pod y, port: tcp/0}\n",
        "c.yaml",
        None,
    ) else {
        panic!("accepted");
    };
    let text = e.render();
    assert!(text.contains("c.yaml:2:"), "{text}");
    assert!(text.contains("checks[0].port"), "{text}");
    let ok = read_file(
        "checks: [{name: a, from: pod x, to: pod y}]\n",
        "c.yaml",
        None,
    )
    .unwrap();
    assert_eq!(ok.len(), 1);
    let Err(e) = read_file("checks: [\n", "c.yaml", None) else {
        panic!("accepted");
    };
    assert!(e.render().contains("YAML"), "{}", e.render());
}

const TOPO: &str = "
name: t
nodes: [{name: node1}, {name: node2}]
hosts: [{name: outside}]
pods:
  - {name: client, node: node1, labels: {app: client}, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: web, namespace: shop, node: node2, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - {name: api, replicas: 2, selector: {app: api}, template: {labels: {app: api}, containers: [{name: c, command: [sleep, infinity]}]}}
services:
  - {name: web, namespace: shop, type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
  - {name: api, selector: {app: api}, ports: [{port: 53, protocol: UDP}]}
";

/// The errors of `TOPO` with `checks` added.
fn topology_errors(checks: &str) -> Vec<Diagnostic> {
    let src = format!("{TOPO}checks:\n{checks}");
    match crate::load_str("t.yaml", src) {
        Ok(_) => Vec::new(),
        Err(crate::LoadError::Invalid { diagnostics, .. }) => diagnostics,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn checks_in_a_topology_are_decoded_and_leave_the_plan_alone() {
    let checks = "  - {name: a, from: pod client, to: service web.shop, port: http/80}
  - {name: b, from: {rc: api}, to: service api, port: udp/53}
  - {name: c, from: host outside, to: nodePort web.shop via node2}
  - {name: d, matrix: {from: {allNodes: true}, to: {pods: {app: web}}}}
";
    let with = crate::plan::testutil::load(&format!("{TOPO}checks:\n{checks}"));
    let without = crate::plan::testutil::load(TOPO);
    assert_eq!(with.topology.checks.len(), 4);
    assert!(without.topology.checks.is_empty());
    assert_eq!(with.plan, without.plan);
}

#[test]
fn names_a_topology_does_not_hold_are_errors() {
    let cases = [
        (
            "{name: a, from: pod clint, to: pod web.shop}",
            "checks[0].from",
            "no pod `clint`",
            "did you mean `client`?",
        ),
        (
            "{name: a, from: pod client, to: pod web}",
            "checks[0].to",
            "no pod `web` in namespace `default`",
            "write `pod web.shop`",
        ),
        (
            "{name: a, from: node outside, to: pod client}",
            "checks[0].from",
            "no node `outside`",
            "`outside` is a host: write `host outside`",
        ),
        (
            "{name: a, from: host node3, to: pod client}",
            "checks[0].from",
            "no host `node3`",
            "the hosts are: outside",
        ),
        (
            "{name: a, from: pod client, to: service wbe.shop}",
            "checks[0].to",
            "no service `wbe`",
            "did you mean `web.shop`?",
        ),
        (
            "{name: a, from: pod client, to: external web.shop}",
            "checks[0].to",
            "no external IP",
            "LoadBalancer",
        ),
        (
            "{name: a, from: pod client, to: nodePort api via node1}",
            "checks[0].to",
            "no node port",
            "NodePort",
        ),
        (
            "{name: a, from: pod client, to: nodePort web.shop via node9}",
            "checks[0].to",
            "no node `node9`",
            "did you mean `node1`?",
        ),
        (
            "{name: a, from: pod client, to: service web.shop, port: tcp/81}",
            "checks[0].port",
            "no TCP port 81",
            "tcp/80",
        ),
        (
            "{name: a, from: pod client, to: service api, port: tcp/53}",
            "checks[0].port",
            "no TCP port 53",
            "udp/53",
        ),
        (
            "{name: a, from: {pods: {app: nope}}, to: pod client}",
            "checks[0].from",
            "no pod has the labels {app: nope}",
            "allPods",
        ),
        (
            "{name: a, from: {rc: apj}, to: pod client}",
            "checks[0].from",
            "no replication controller `apj`",
            "did you mean `api`?",
        ),
        (
            "{name: a, matrix: {from: {allHosts: true}, to: pod nobody}}",
            "checks[0].matrix.to",
            "no pod `nobody`",
            "the pods are",
        ),
    ];
    for (entry, path, message, help) in cases {
        let diags = topology_errors(&format!("  - {entry}\n"));
        assert_eq!(diags.len(), 1, "{entry}: {diags:#?}");
        let d = &diags[0];
        assert_eq!(d.path, path, "{entry}: {d:#?}");
        assert!(d.message.contains(message), "{entry}: {d:#?}");
        assert!(d.help.as_ref().unwrap().contains(help), "{entry}: {d:#?}");
    }
}

#[test]
fn a_checks_file_is_checked_against_a_running_plan() {
    let plan = crate::plan::testutil::plan(TOPO);
    let known = Known::of_plan(&plan);
    assert!(read_file(
        "checks: [{name: a, from: {rc: api}, to: pod web.shop}]",
        "c.yaml",
        Some(&known)
    )
    .is_ok());
    let Err(e) = read_file(
        "checks: [{name: a, from: pod clint, to: pod web.shop}]",
        "c.yaml",
        Some(&known),
    ) else {
        panic!("accepted");
    };
    assert!(
        e.render().contains("did you mean `client`?"),
        "{}",
        e.render()
    );
    assert_eq!(
        Known::of_plan(&plan),
        Known::of_topology(&crate::plan::testutil::load(TOPO).topology)
    );
}

#[test]
fn an_unknown_selector_is_only_an_unknown_field() {
    // Once, `{allpods: true}` was reported and then also read as
    // `{allHosts: true}`, which gave a second, misleading error.
    let diags = topology_errors("  - {name: a, from: {allpods: true}, to: pod client}\n");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].path, "checks[0].from.allpods");
    let (checks, _) = read("checks: [{name: a, from: {allpods: true}, to: pod y}]");
    assert!(checks.is_empty(), "{checks:?}");
}
