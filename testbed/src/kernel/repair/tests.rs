//! Unit tests of the pure repair planner.

use super::*;
use std::net::Ipv4Addr;

fn addr(s: &str) -> IfAddr {
    s.parse().unwrap()
}

fn link(kind: &str, mtu: u32, master: Option<&str>, addrs: &[&str]) -> LinkState {
    LinkState {
        kind: kind.into(),
        mac: Some(Mac([0x0a, 0x58, 0, 0, 0, 1])),
        mtu,
        up: true,
        master: master.map(str::to_string),
        addresses: addrs.iter().map(|a| addr(a)).collect(),
        qdisc: None,
    }
}

fn rt(dst: &str, via: Option<&str>, dev: &str) -> Route {
    Route {
        dst: dst.into(),
        via: via.map(|v| v.parse().unwrap()),
        dev: dev.into(),
        onlink: false,
    }
}

/// A pod's namespace: eth0 with an address and a default route.
fn pod() -> NsState {
    let mut s = NsState::default();
    s.links
        .insert("eth0".into(), link("veth", 1450, None, &["10.244.1.5/24"]));
    s.routes = vec![rt("default", Some("10.244.1.1"), "eth0")];
    s
}

/// A node's namespace: uplink, pod bridge, one pod port, a neighbour and a
/// sysctl.
fn node() -> NsState {
    let mut s = NsState::default();
    s.links
        .insert("eth0".into(), link("veth", 1500, None, &["10.0.0.2/24"]));
    s.links.insert(
        "cni0".into(),
        link("bridge", 1450, None, &["10.244.1.1/24"]),
    );
    s.links
        .insert("veth1234".into(), link("veth", 1450, Some("cni0"), &[]));
    s.routes = vec![rt("10.244.2.0/24", Some("10.0.0.3"), "eth0")];
    s.neighbours = vec![Neighbour {
        ip: Ipv4Addr::new(10, 244, 2, 0),
        mac: Mac([0x0a, 0x58, 0, 0, 0, 9]),
        dev: "eth0".into(),
    }];
    s.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    s
}

fn texts(f: &[Fix]) -> Vec<String> {
    f.iter().map(|x| x.to_string()).collect()
}

#[test]
fn nothing_differs_nothing_to_do() {
    assert!(repairs(&pod(), &pod()).is_empty());
    assert!(repairs(&node(), &node()).is_empty());
}

#[test]
fn a_deleted_route_is_restored() {
    let mut have = pod();
    have.routes.clear();
    let f = repairs(&pod(), &have);
    assert_eq!(
        f,
        vec![Fix::AddRoute(rt("default", Some("10.244.1.1"), "eth0"))]
    );
    assert_eq!(
        texts(&f),
        ["route default via 10.244.1.1 dev eth0 restored"]
    );
}

#[test]
fn a_changed_mtu_is_set_back_and_named_with_the_old_value() {
    let mut have = pod();
    have.links.get_mut("eth0").unwrap().mtu = 9000;
    let f = repairs(&pod(), &have);
    assert_eq!(texts(&f), ["eth0 mtu 1450 (was 9000)"]);
}

#[test]
fn a_missing_link_is_recreated_with_its_addresses_and_routes() {
    let mut have = pod();
    have.links.clear();
    have.routes.clear();
    let f = repairs(&pod(), &have);
    // The recreation brings its address and route: no separate fixes.
    assert_eq!(
        f,
        vec![Fix::RecreateLink {
            link: "eth0".into()
        }]
    );
    assert_eq!(texts(&f), ["eth0 recreated"]);
}

#[test]
fn a_link_of_the_wrong_kind_is_recreated() {
    let mut have = pod();
    have.links.get_mut("eth0").unwrap().kind = "dummy".into();
    assert_eq!(
        repairs(&pod(), &have),
        vec![Fix::RecreateLink {
            link: "eth0".into()
        }]
    );
}

#[test]
fn a_port_taken_off_its_bridge_is_put_back() {
    let mut have = node();
    have.links.get_mut("veth1234").unwrap().master = None;
    let f = repairs(&node(), &have);
    assert_eq!(
        f,
        vec![Fix::SetMaster {
            link: "veth1234".into(),
            master: Some("cni0".into()),
            was: None
        }]
    );
    assert_eq!(texts(&f), ["veth1234 master cni0 (was none)"]);
}

#[test]
fn a_link_down_is_set_up_and_one_wanted_down_is_set_down() {
    let mut have = pod();
    have.links.get_mut("eth0").unwrap().up = false;
    have.routes.clear(); // the kernel drops them with the link
    let f = repairs(&pod(), &have);
    assert_eq!(
        texts(&f),
        [
            "eth0 set up",
            "route default via 10.244.1.1 dev eth0 restored"
        ]
    );
    // A link-down fault: want says down, the link is up.
    let mut want = pod();
    want.links.get_mut("eth0").unwrap().up = false;
    let f = repairs(&want, &pod());
    assert_eq!(
        f,
        vec![Fix::SetUp {
            link: "eth0".into(),
            up: false
        }]
    );
    // Once down (and its routes gone) nothing more is wanted: its routes
    // are neither added nor counted unexpected.
    let mut down = pod();
    down.links.get_mut("eth0").unwrap().up = false;
    down.routes.clear();
    assert!(repairs(&want, &down).is_empty());
    // A missing link wanted down is recreated, then set down.
    down.links.clear();
    assert_eq!(
        texts(&repairs(&want, &down)),
        ["eth0 recreated", "eth0 set down"]
    );
}

#[test]
fn unexpected_routes_addresses_and_neighbours_on_own_links_are_removed_first() {
    let mut have = node();
    let l = have.links.get_mut("eth0").unwrap();
    l.addresses = vec![addr("10.0.0.99/24")];
    have.routes = vec![
        rt("10.244.2.0/24", Some("10.0.0.4"), "eth0"),
        rt("192.168.9.0/24", None, "cni0"),
    ];
    have.neighbours[0].mac = Mac([0x0a, 0x58, 0, 0, 0, 8]);
    let f = repairs(&node(), &have);
    assert_eq!(
        texts(&f),
        [
            "unexpected address 10.0.0.99/24 on eth0 removed",
            "address 10.0.0.2/24 on eth0 restored",
            "unexpected route 10.244.2.0/24 via 10.0.0.4 dev eth0 removed",
            "unexpected route 192.168.9.0/24 dev cni0 removed",
            "route 10.244.2.0/24 via 10.0.0.3 dev eth0 restored",
            "unexpected neighbour 10.244.2.0 lladdr 0a:58:00:00:00:08 dev eth0 removed",
            "neighbour 10.244.2.0 lladdr 0a:58:00:00:00:09 dev eth0 restored",
        ]
    );
}

#[test]
fn foreign_interfaces_and_what_is_on_them_are_left_alone() {
    let mut have = node();
    have.links.insert(
        "dummy0".into(),
        link("dummy", 1500, None, &["192.0.2.1/24"]),
    );
    have.routes.push(rt("192.0.2.128/25", None, "dummy0"));
    have.neighbours.push(Neighbour {
        ip: Ipv4Addr::new(192, 0, 2, 9),
        mac: Mac([2, 0, 0, 0, 0, 9]),
        dev: "dummy0".into(),
    });
    assert!(repairs(&node(), &have).is_empty());
}

#[test]
fn sysctls_are_set_back() {
    let mut have = node();
    have.sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    assert_eq!(
        texts(&repairs(&node(), &have)),
        ["sysctl net.ipv4.ip_forward = 1 (was 0)"]
    );
    have.sysctls.clear();
    assert_eq!(
        texts(&repairs(&node(), &have)),
        ["sysctl net.ipv4.ip_forward = 1 (was unreadable)"]
    );
}

#[test]
fn a_changed_mac_is_set_back() {
    let mut have = pod();
    have.links.get_mut("eth0").unwrap().mac = Some(Mac([2, 0, 0, 0, 0, 1]));
    assert_eq!(
        texts(&repairs(&pod(), &have)),
        ["eth0 mac 0a:58:00:00:00:01 (was 02:00:00:00:00:01)"]
    );
}

#[test]
fn the_order_is_links_addresses_routes_neighbours_sysctls() {
    let mut have = node();
    have.links.remove("veth1234");
    have.links.get_mut("cni0").unwrap().mtu = 9000;
    have.links.get_mut("eth0").unwrap().up = false;
    have.links.get_mut("eth0").unwrap().addresses.clear();
    have.routes.clear();
    have.neighbours.clear();
    have.sysctls.clear();
    let f = repairs(&node(), &have);
    assert_eq!(
        texts(&f),
        [
            "veth1234 recreated",
            "cni0 mtu 1450 (was 9000)",
            "eth0 set up",
            "address 10.0.0.2/24 on eth0 restored",
            "route 10.244.2.0/24 via 10.0.0.3 dev eth0 restored",
            "neighbour 10.244.2.0 lladdr 0a:58:00:00:00:09 dev eth0 restored",
            "sysctl net.ipv4.ip_forward = 1 (was unreadable)",
        ]
    );
    // Deterministic: the same input, the same list.
    assert_eq!(repairs(&node(), &have), f);
}
