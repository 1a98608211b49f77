//! The differences between two plans that cannot be made to a running
//! testbed, each named by its field as the topology file spells it, for
//! `testbed apply` to refuse with.

use crate::plan::Plan;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// A difference that cannot be made live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotLive {
    /// The field, as the topology file spells it: `cluster.podCIDR`,
    /// `seed`, `name`, `nodes`, `hosts`.
    pub field: String,
    /// The running value (absent for something added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The new value (absent for something removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// What cannot change, and what to do instead.
    pub message: String,
}

impl fmt::Display for NotLive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `value` as the topology file spells it (`10.244.0.0/16`, `host-gw`,
/// `iptables`, `1500`): its JSON text, without the quotes of a string.
pub(super) fn spelled<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("({e})"),
    }
}

/// A setting's value, spelled as in the file.
type Spell = fn(&Plan) -> String;

/// The settings that cannot change on a running testbed, by field, each
/// with its value as the file spells it. `cluster.containerLogMaxSize` is
/// not one: the supervisor's next look at the logs takes the new cap.
const SETTINGS: [(&str, Spell); 10] = [
    ("name", |p| p.name.clone()),
    ("seed", |p| p.seed.to_string()),
    ("cluster.podCIDR", |p| spelled(&p.cluster.pod_cidr)),
    ("cluster.subnetLen", |p| p.cluster.subnet_len.to_string()),
    ("cluster.serviceCIDR", |p| spelled(&p.cluster.service_cidr)),
    ("cluster.underlayCIDR", |p| {
        spelled(&p.cluster.underlay_cidr)
    }),
    ("cluster.loadBalancerCIDR", |p| {
        spelled(&p.cluster.load_balancer_cidr)
    }),
    ("cluster.mtu", |p| p.cluster.mtu.to_string()),
    ("cluster.overlay", |p| spelled(&p.cluster.overlay)),
    ("cluster.proxy", |p| spelled(&p.cluster.proxy)),
];

/// Every difference between `old` (running) and `new` that cannot be made
/// to a running testbed: cluster settings, seed and name, nodes or hosts
/// added or removed, and LAN addresses or pod subnets that would move.
pub fn not_live(old: &Plan, new: &Plan) -> Vec<NotLive> {
    let redo = format!("run `testbed down {}` and `testbed up FILE`", old.name);
    let mut out = Vec::new();
    for (field, value) in SETTINGS {
        let (a, b) = (value(old), value(new));
        if a != b {
            out.push(NotLive {
                message: format!("{field} cannot change on a running testbed ({a} → {b}): {redo}"),
                field: field.to_string(),
                old: Some(a),
                new: Some(b),
            });
        }
    }
    let (c, d) = (&old.cluster, &new.cluster);
    let lan_same =
        c.underlay_cidr == d.underlay_cidr && c.load_balancer_cidr == d.load_balancer_cidr;
    let pods_same = c.pod_cidr == d.pod_cidr && c.subnet_len == d.subnet_len;
    let nodes = |p: &Plan| -> Vec<(String, Ipv4Addr, String)> {
        p.nodes
            .iter()
            .map(|n| (n.name.clone(), n.ip, spelled(&n.lease.subnet)))
            .collect()
    };
    let hosts = |p: &Plan| -> Vec<(String, Ipv4Addr, String)> {
        p.hosts
            .iter()
            .map(|h| (h.name.clone(), h.ip, String::new()))
            .collect()
    };
    let kinds = [
        ("nodes", "node", nodes(old), nodes(new)),
        ("hosts", "host", hosts(old), hosts(new)),
    ];
    for (field, kind, a, b) in kinds {
        if !same_machines(&mut out, (field, kind), &a, &b, &redo) {
            continue;
        }
        // The same machines: their addresses and subnets must stay put
        // (they follow the machines' order in the file).
        for (name, ip, subnet) in &a {
            let Some((_, ip2, subnet2)) = b.iter().find(|m| &m.0 == name) else {
                continue;
            };
            if lan_same && ip != ip2 {
                let what = (ip.to_string(), ip2.to_string());
                out.push(moved((field, kind), name, "LAN address", what, &redo));
            }
            if pods_same && subnet != subnet2 {
                let what = (subnet.clone(), subnet2.clone());
                out.push(moved((field, kind), name, "pod subnet", what, &redo));
            }
        }
    }
    out
}

/// A machine: its name, LAN address and pod subnet (empty for hosts).
type Machine = (String, Ipv4Addr, String);

/// Adds to `out` each machine of `a` not in `b` and each of `b` not in
/// `a`; returns whether there was none.
fn same_machines(
    out: &mut Vec<NotLive>,
    (field, kind): (&str, &str),
    a: &[Machine],
    b: &[Machine],
    redo: &str,
) -> bool {
    let names = |m: &[Machine]| -> BTreeSet<String> { m.iter().map(|m| m.0.clone()).collect() };
    let (before, after) = (names(a), names(b));
    let before_len = out.len();
    for (name, _, _) in b.iter().filter(|m| !before.contains(&m.0)) {
        out.push(NotLive {
            field: field.to_string(),
            old: None,
            new: Some(name.clone()),
            message: format!(
                "{field}: {kind} {name} cannot be added to a running testbed in this version: {redo}"
            ),
        });
    }
    for (name, _, _) in a.iter().filter(|m| !after.contains(&m.0)) {
        out.push(NotLive {
            field: field.to_string(),
            old: Some(name.clone()),
            new: None,
            message: format!(
                "{field}: {kind} {name} cannot be removed from a running testbed in this version: {redo}"
            ),
        });
    }
    out.len() == before_len
}

/// A machine whose address or subnet would move.
fn moved(
    (field, kind): (&str, &str),
    name: &str,
    what: &str,
    (a, b): (String, String),
    redo: &str,
) -> NotLive {
    NotLive {
        message: format!(
            "{field}: the {what} of {kind} {name} would change ({a} → {b}; {field} take them \
             in the order of the file), which a running testbed cannot do: {redo}"
        ),
        field: field.to_string(),
        old: Some(a),
        new: Some(b),
    }
}
