use super::*;
use crate::plan::testutil::plan;

const BASE: &str = "
name: t
nodes:
  - {name: node1, labels: {zone: a}, link: {delay: 10ms}}
  - {name: node2}
hosts:
  - name: client
    containers: [{name: main, command: [sleep, infinity]}]
pods:
  - name: api
    labels: {app: api}
    containers: [{name: main, command: [sleep, infinity]}]
  - name: db
    node: node2
    containers: [{name: main, command: [sleep, infinity]}]
replicationControllers:
  - name: web
    replicas: 2
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: http, command: [sleep, infinity]}]
services:
  - name: web
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
";

/// BASE with each `(from, to)` replaced once (each must be there).
fn edited(edits: &[(&str, &str)]) -> Plan {
    let mut text = BASE.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "{from} is not in the base file");
        text = text.replacen(from, to, 1);
    }
    plan(&text)
}

fn fields_of<F: Copy>(changed: &[Changed<F>], name: &str) -> Vec<F> {
    changed
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.fields.clone())
        .unwrap_or_default()
}

#[test]
fn the_same_plan_changes_nothing() {
    let a = plan(BASE);
    let c = changes(&a, &a.clone());
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(c.render(), "");
    assert_eq!(not_live(&a, &a), vec![]);
}

#[test]
fn pods_added_removed_and_changed() {
    let old = plan(BASE);
    let new = edited(&[
        ("replicas: 2", "replicas: 3"),
        ("labels: {app: api}", "labels: {app: api, tier: back}"),
        (
            "containers: [{name: main, command: [sleep, infinity]}]\n  - name: db",
            "containers: [{name: main, command: [sleep, '1000']}]\n  - name: db",
        ),
        (
            "  - name: db\n    node: node2\n    containers: [{name: main, command: [sleep, infinity]}]\n",
            "",
        ),
    ]);
    let c = changes(&old, &new);
    let added: Vec<&str> = c.pods.added.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(added, ["web-2"]);
    assert_eq!(c.pods.added[0].owner.as_deref(), Some("web"));
    let removed: Vec<&str> = c.pods.removed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(removed, ["db"]);
    assert_eq!(
        fields_of(&c.pods.changed, "api"),
        [PodField::Labels, PodField::Containers]
    );
    // The new replica is an endpoint of the service.
    assert_eq!(
        fields_of(&c.services.changed, "web"),
        [ServiceField::Endpoints]
    );
    let text = c.render();
    let p = &c.pods.added[0];
    let ip = p.ip.unwrap();
    assert!(
        text.contains(&format!("+ pod default/web-2 on {} {ip}\n", p.node)),
        "{text}"
    );
    assert!(text.contains("- pod default/db\n"), "{text}");
    assert!(
        text.contains("~ pod default/api: labels, containers\n"),
        "{text}"
    );
    assert!(
        text.contains("~ service default/web: endpoints\n"),
        "{text}"
    );
    // All of it is live.
    assert_eq!(not_live(&old, &new), vec![]);
}

#[test]
fn a_pod_moved_or_pinned_names_node_and_ip() {
    let old = plan(BASE);
    let new = edited(&[("node: node2", "node: node1")]);
    let f = fields_of(&changes(&old, &new).pods.changed, "db");
    assert!(
        f.contains(&PodField::Node) && f.contains(&PodField::Ip),
        "{f:?}"
    );
    assert!(
        !f.contains(&PodField::Interface),
        "explained by the move: {f:?}"
    );
    let new = edited(&[("node: node2", "node: node2\n    ip: 10.244.2.50")]);
    assert_eq!(
        fields_of(&changes(&old, &new).pods.changed, "db"),
        [PodField::Ip]
    );
    let new = edited(&[("node: node2", "node: node2\n    network: host")]);
    let f = fields_of(&changes(&old, &new).pods.changed, "db");
    assert!(f.contains(&PodField::Network), "{f:?}");
}

#[test]
fn services_added_removed_and_changed() {
    let old = plan(BASE);
    let new = edited(&[(
        "services:\n",
        "services:\n  - name: shop\n    selector: {app: api}\n    clusterIP: 10.96.0.12\n    ports: [{port: 80}]\n  - name: dns\n    type: NodePort\n    selector: {app: api}\n    clusterIP: 10.96.0.53\n    ports: [{name: a, port: 53, protocol: UDP}, {name: b, port: 53}]\n",
    )]);
    let c = changes(&old, &new);
    let text = c.render();
    assert!(
        text.contains("+ service default/shop 10.96.0.12:80/TCP\n"),
        "{text}"
    );
    assert!(
        text.contains("+ service default/dns 10.96.0.53:53/UDP,53/TCP (NodePort)\n"),
        "{text}"
    );
    let back = changes(&new, &old);
    let removed: Vec<&str> = back
        .services
        .removed
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(removed, ["shop", "dns"]);
    assert!(back.render().contains("- service default/shop\n"));
    // A new cluster IP, port and selector: changed, and live.
    let moved = edited(&[(
        "    selector: {app: web}\n    ports: [{port: 80, targetPort: 8080}]",
        "    selector: {app: api}\n    clusterIP: 10.96.0.99\n    ports: [{port: 81, targetPort: 8080}]",
    )]);
    let c = changes(&old, &moved);
    assert_eq!(
        fields_of(&c.services.changed, "web"),
        [
            ServiceField::ClusterIp,
            ServiceField::Selector,
            ServiceField::Ports,
            ServiceField::Endpoints
        ]
    );
    assert!(c
        .render()
        .contains("~ service default/web: clusterIP, selector, ports, endpoints\n"));
    assert_eq!(not_live(&old, &moved), vec![]);
}

#[test]
fn node_labels_and_links_are_changed_live() {
    let old = plan(BASE);
    let new = edited(&[(
        "labels: {zone: a}, link: {delay: 10ms}",
        "labels: {zone: b}, link: {delay: 20ms, loss: 1%}",
    )]);
    let c = changes(&old, &new);
    assert_eq!(
        fields_of(&c.nodes.changed, "node1"),
        [NodeField::Labels, NodeField::Link]
    );
    assert_eq!(c.links.len(), 1);
    assert_eq!(c.links[0].kind, MachineKind::Node);
    assert_eq!(
        c.render(),
        "~ node node1: labels, link delay 10ms → 20ms, loss none → 1%\n"
    );
    let only_link = edited(&[("link: {delay: 10ms}", "link: {delay: 20ms}")]);
    assert_eq!(
        changes(&old, &only_link).render(),
        "~ node node1: link delay 10ms → 20ms\n"
    );
    // A host's link appears, and its containers change: both live.
    let host = edited(&[
        (
            "  - name: client\n",
            "  - name: client\n    link: {rate: 20mbit}\n",
        ),
        (
            "command: [sleep, infinity]}]\npods",
            "command: [sleep, '5']}]\npods",
        ),
    ]);
    let c = changes(&old, &host);
    assert_eq!(
        fields_of(&c.hosts.changed, "client"),
        [HostField::Link, HostField::Containers]
    );
    assert_eq!(c.links[0].old, None);
    assert_eq!(
        c.render(),
        "~ host client: containers, link rate none → 20mbit\n"
    );
    assert_eq!(not_live(&old, &new), vec![]);
    assert_eq!(not_live(&old, &host), vec![]);
}

#[test]
fn cluster_settings_are_refused_by_name() {
    let old = plan(BASE);
    let new = plan(&BASE.replacen(
        "nodes:",
        "cluster: {podCIDR: 10.245.0.0/16, proxy: nftables, mtu: 1400, containerLogMaxSize: 1Mi}\nnodes:",
        1,
    ));
    let refused = not_live(&old, &new);
    let fields: Vec<&str> = refused.iter().map(|n| n.field.as_str()).collect();
    assert_eq!(fields, ["cluster.podCIDR", "cluster.mtu", "cluster.proxy"]);
    assert_eq!(
        refused[0].to_string(),
        "cluster.podCIDR cannot change on a running testbed (10.244.0.0/16 → 10.245.0.0/16): \
         run `testbed down t` and `testbed up FILE`"
    );
    assert_eq!(refused[2].old.as_deref(), Some("iptables"));
    assert_eq!(refused[2].new.as_deref(), Some("nftables"));
    // No line per moved subnet: the podCIDR explains them.
    assert!(!fields.contains(&"nodes"));
    let all = plan(&BASE.replacen(
        "nodes:",
        "seed: 7\ncluster: {subnetLen: 25, serviceCIDR: 10.97.0.0/16, underlayCIDR: 10.77.0.0/24, overlay: vxlan}\nnodes:",
        1,
    ));
    let fields: Vec<String> = not_live(&old, &all).into_iter().map(|n| n.field).collect();
    assert_eq!(
        fields,
        [
            "seed",
            "cluster.subnetLen",
            "cluster.serviceCIDR",
            "cluster.underlayCIDR",
            "cluster.loadBalancerCIDR",
            "cluster.overlay"
        ]
    );
    let renamed = plan(&BASE.replacen("name: t", "name: u", 1));
    let refused = not_live(&old, &renamed);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].field, "name");
}

#[test]
fn nodes_and_hosts_added_or_removed_are_refused() {
    let old = plan(BASE);
    let new = edited(&[
        (
            "  - {name: node2}\n",
            "  - {name: node2}\n  - {name: node3}\n",
        ),
        ("  - name: client\n", "  - name: server\n"),
    ]);
    let refused = not_live(&old, &new);
    let got: Vec<(&str, Option<&str>, Option<&str>)> = refused
        .iter()
        .map(|n| (n.field.as_str(), n.old.as_deref(), n.new.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("nodes", None, Some("node3")),
            ("hosts", None, Some("server")),
            ("hosts", Some("client"), None),
        ]
    );
    assert!(refused[0]
        .message
        .starts_with("nodes: node node3 cannot be added"));
    let c = changes(&old, &new);
    assert_eq!(c.nodes.added[0].name, "node3");
    assert!(
        c.render().contains("+ node node3 192.168.96.3\n"),
        "{}",
        c.render()
    );
    assert!(c.render().contains("- host client\n"));
}

/// Machines take LAN addresses and subnets in file order: swapping two
/// nodes would move both, which a running testbed cannot do.
#[test]
fn machines_that_would_move_are_refused() {
    let old = plan(BASE);
    let new = edited(&[
        (
            "  - {name: node1, labels: {zone: a}, link: {delay: 10ms}}\n",
            "",
        ),
        (
            "  - {name: node2}\n",
            "  - {name: node2}\n  - {name: node1, labels: {zone: a}, link: {delay: 10ms}}\n",
        ),
    ]);
    let refused = not_live(&old, &new);
    let fields: Vec<&str> = refused.iter().map(|n| n.field.as_str()).collect();
    assert_eq!(fields, ["nodes"; 4], "{refused:#?}");
    assert!(
        refused[0].message.contains("LAN address of node node1"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].message.contains("pod subnet of node node1"),
        "{}",
        refused[1]
    );
    let f = fields_of(&changes(&old, &new).nodes.changed, "node1");
    assert_eq!(f, [NodeField::Ip, NodeField::PodSubnet]);
}

#[test]
fn the_json_form_is_typed_and_camel_case() {
    let old = plan(BASE);
    let new = edited(&[
        ("replicas: 2", "replicas: 3"),
        ("link: {delay: 10ms}", "link: {delay: 20ms}"),
        (
            "ports: [{port: 80, targetPort: 8080}]",
            "clusterIP: 10.96.0.99\n    ports: [{port: 80, targetPort: 8080}]",
        ),
    ]);
    let v = serde_json::to_value(changes(&old, &new)).unwrap();
    assert_eq!(v["pods"]["added"][0]["name"], "web-2");
    assert_eq!(v["pods"]["added"][0]["namespace"], "default");
    assert!(v["pods"]["added"][0]["ip"].is_string());
    assert_eq!(v["pods"]["removed"], serde_json::json!([]));
    assert_eq!(v["services"]["changed"][0]["fields"][0], "clusterIP");
    assert_eq!(
        v["nodes"]["changed"][0]["fields"],
        serde_json::json!(["link"])
    );
    assert!(v["nodes"]["changed"][0].get("namespace").is_none());
    assert_eq!(v["links"][0]["kind"], "node");
    assert_eq!(v["links"][0]["old"]["delay"], "10ms");
    assert_eq!(v["links"][0]["new"]["delay"], "20ms");
    let refused = serde_json::to_value(not_live(
        &old,
        &plan(&BASE.replacen("name: t", "name: u", 1)),
    ))
    .unwrap();
    assert_eq!(refused[0]["field"], "name");
    assert_eq!(refused[0]["old"], "t");
    for f in [PodField::Interface, PodField::Ip] {
        assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
    }
    assert_eq!(
        serde_json::to_value(ServiceField::LoadBalancerIp).unwrap(),
        "loadBalancerIP"
    );
    assert_eq!(
        serde_json::to_value(NodeField::PodSubnet).unwrap(),
        "podSubnet"
    );
}
