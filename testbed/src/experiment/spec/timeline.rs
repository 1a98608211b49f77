//! The `timeline` of an experiment: `{at, fault: {...}, for}`,
//! `{at, check: NAME}` and `{at, exec: {pod, command}}`, with the pods,
//! nodes, hosts, controllers and checks they name checked against the
//! topology's plan.

use super::{duration, time};
use crate::diag::At;
use crate::experiment::{Action, Entry, Fault, Impairment, LinkTarget, PodTarget};
use crate::topology::decode::{at, Decoder, Obj};
use crate::topology::yaml::{Node, Value};
use crate::Loaded;

const ENTRY: &[&str] = &["at", "fault", "for", "check", "exec"];
const FAULTS: &[&str] = &[
    "kill",
    "delete",
    "nodeDown",
    "linkDown",
    "partition",
    "impair",
    "scale",
];
const IMPAIR: &[&str] = &["node", "delay", "jitter", "loss"];
const TARGET_HELP: &str = "write `pod NAME`, `pod NAMESPACE/NAME` or `{pick: {rc: NAME}}`";

/// The `timeline` list of `obj`.
pub(super) fn timeline(d: &mut Decoder, obj: &Obj, topo: &Loaded) -> Vec<Entry> {
    let Some((node, path)) = obj.get("timeline") else {
        return Vec::new();
    };
    d.list(node, &path, "`timeline`")
        .into_iter()
        .filter_map(|(n, p)| entry(d, n, &p, topo))
        .collect()
}

fn entry(d: &mut Decoder, node: &Node, path: &str, topo: &Loaded) -> Option<Entry> {
    let obj = d.obj(node, path, "a timeline entry", ENTRY)?;
    let at_ = d
        .required(&obj, "at", "a timeline entry", "5s")
        .and_then(|(n, p)| duration(d, n, &p, "`at`"));
    let written: Vec<&str> = ["fault", "check", "exec"]
        .into_iter()
        .filter(|k| obj.get(k).is_some())
        .collect();
    if written.len() != 1 {
        d.err(
            &obj.at(),
            format!("a timeline entry does exactly one thing, but this has {}", if written.is_empty() { "none".to_string() } else { written.join(" and ") }),
            "write one of `fault: {kill: pod web-0}`, `check: NAME` or `exec: {pod: NAME, command: [...]}`",
        );
        return None;
    }
    let hold = time(d, &obj, "for");
    if hold.is_some() && written[0] != "fault" {
        d.err(
            &obj.key_at("for"),
            "`for` applies only to a fault",
            "leave out `for`: it says when a fault is undone",
        );
    }
    let (n, p) = obj.get(written[0])?;
    let action = match written[0] {
        "fault" => Action::Fault(fault(d, n, &p, topo)?),
        "check" => {
            let name = d.text(n, &p, "`check`")?;
            let names: Vec<&str> = topo
                .topology
                .checks
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            if !names.contains(&name.value.as_str()) {
                let help = match crate::diag::did_you_mean(&name.value, &names) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if names.is_empty() => {
                        "the topology declares no checks; add a `checks:` list to it".to_string()
                    }
                    None => format!("the topology's checks are: {}", names.join(", ")),
                };
                d.err(
                    &name.at,
                    format!("the topology has no check named `{}`", name.value),
                    help,
                );
                return None;
            }
            Action::Check(name.value)
        }
        _ => exec(d, n, &p, topo)?,
    };
    Some(Entry {
        at: at_?,
        action,
        hold,
    })
}

fn exec(d: &mut Decoder, node: &Node, path: &str, topo: &Loaded) -> Option<Action> {
    let obj = d.obj(node, path, "`exec`", &["pod", "command"])?;
    let pod = d
        .required(&obj, "pod", "`exec`", "toolbox")
        .and_then(|(n, p)| d.text(n, &p, "`pod`"))
        .and_then(|t| pod_name(d, &t.value, &t.at, topo));
    let command = d
        .required(&obj, "command", "`exec`", "[ip, route]")
        .map(|(n, p)| {
            d.list(n, &p, "`command`")
                .into_iter()
                .filter_map(|(n, p)| d.text(n, &p, "an argument").map(|t| t.value))
                .collect::<Vec<_>>()
        });
    if let Some(c) = &command {
        if c.is_empty() {
            d.err(
                &obj.key_at("command"),
                "`command` is empty",
                "write the program and its arguments, e.g. `[ip, route]`",
            );
            return None;
        }
    }
    Some(Action::Exec {
        pod: pod?,
        command: command?,
    })
}

/// `NAME` or `NAMESPACE/NAME` of a pod of the plan, as `NAMESPACE/NAME`.
fn pod_name(d: &mut Decoder, text: &str, at_: &At, topo: &Loaded) -> Option<String> {
    let (ns, name) = text.split_once('/').unwrap_or(("default", text));
    if topo
        .plan
        .pods
        .iter()
        .any(|p| p.name == name && p.namespace == ns)
    {
        return Some(format!("{ns}/{name}"));
    }
    let names: Vec<String> = topo
        .plan
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let full = format!("{ns}/{name}");
    let help = match crate::diag::did_you_mean(&full, &refs) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("the topology's pods are: {}", names.join(", ")),
    };
    d.err(at_, format!("the topology has no pod `{full}`"), help);
    None
}

/// A machine name that the plan has (`nodes` only or nodes and hosts).
fn machine(d: &mut Decoder, node: &Node, path: &str, topo: &Loaded, hosts: bool) -> Option<String> {
    let t = d.text(node, path, "a node")?;
    let t = crate::topology::model::Sp::new(t.value.trim_start_matches("node ").to_string(), t.at);
    let mut names: Vec<&str> = topo
        .topology
        .nodes
        .iter()
        .map(|n| n.name.value.as_str())
        .collect();
    if hosts {
        names.extend(topo.topology.hosts.iter().map(|h| h.name.value.as_str()));
    }
    if names.contains(&t.value.as_str()) {
        return Some(t.value);
    }
    let help = match crate::diag::did_you_mean(&t.value, &names) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("the choices are: {}", names.join(", ")),
    };
    d.err(
        &t.at,
        format!(
            "the topology has no {} `{}`",
            if hosts { "node or host" } else { "node" },
            t.value
        ),
        help,
    );
    None
}

/// `{pick: {rc: NAME}}` or `pod NAME`.
fn pod_target(d: &mut Decoder, node: &Node, path: &str, topo: &Loaded) -> Option<PodTarget> {
    if let Value::Map(_) = node.value {
        let obj = d.obj(node, path, "a target", &["pick"])?;
        let (n, p) = d.required(&obj, "pick", "a target", "{rc: web}")?;
        let pick = d.obj(n, &p, "`pick`", &["rc"])?;
        let (n, p) = d.required(&pick, "rc", "`pick`", "web")?;
        let rc = d.name(n, &p, "`rc`", 63)?;
        if !topo
            .topology
            .controllers
            .iter()
            .any(|c| c.name.value == rc.value)
        {
            let names: Vec<&str> = topo
                .topology
                .controllers
                .iter()
                .map(|c| c.name.value.as_str())
                .collect();
            d.err(
                &rc.at,
                format!("the topology has no replication controller `{}`", rc.value),
                format!("the controllers are: {}", names.join(", ")),
            );
            return None;
        }
        return Some(PodTarget::Pick { rc: rc.value });
    }
    let t = d.text(node, path, "a target")?;
    let Some(name) = t.value.strip_prefix("pod ") else {
        d.err(&t.at, format!("`{}` is not a pod", t.value), TARGET_HELP);
        return None;
    };
    pod_name(d, name.trim(), &t.at, topo).map(PodTarget::Named)
}

/// A `fault`: its one field, decoded.
fn fault(d: &mut Decoder, node: &Node, path: &str, topo: &Loaded) -> Option<Fault> {
    let obj = d.obj(node, path, "a fault", FAULTS)?;
    if obj.entries.len() != 1 {
        d.err(
            &obj.at(),
            format!(
                "a fault has exactly one field, but this has {}",
                obj.entries.len()
            ),
            format!("write one of: {}", FAULTS.join(", ")),
        );
        return None;
    }
    let (key, n) = &obj.entries[0];
    let p = format!("{path}.{}", key.name);
    Some(match key.name.as_str() {
        "kill" => Fault::Kill(pod_target(d, n, &p, topo)?),
        "delete" => Fault::Delete(pod_target(d, n, &p, topo)?),
        "nodeDown" => Fault::NodeDown(machine(d, n, &p, topo, false)?),
        "linkDown" => link_down(d, n, &p, topo)?.into(),
        "partition" => partition(d, n, &p, topo)?,
        "impair" => impair(d, n, &p, topo)?,
        "scale" => scale(d, n, &p, topo)?,
        // An unknown field, already reported by `obj`.
        _ => return None,
    })
}

/// `linkDown`: `node NAME`, `host NAME` or a pod target.
fn link_down(d: &mut Decoder, n: &Node, p: &str, topo: &Loaded) -> Option<LinkTarget> {
    let text = match &n.value {
        Value::Scalar { text, .. } => text.clone(),
        _ => String::new(),
    };
    Some(if text.starts_with("node ") {
        LinkTarget::Node(machine(d, n, p, topo, false)?)
    } else if let Some(h) = text.strip_prefix("host ") {
        let h = h.trim();
        if !topo.topology.hosts.iter().any(|x| x.name.value == h) {
            d.err(
                &at(n, p),
                format!("the topology has no host `{h}`"),
                "name a host of the topology's `hosts`",
            );
            return None;
        }
        LinkTarget::Host(h.to_string())
    } else {
        LinkTarget::Pod(pod_target(d, n, p, topo)?)
    })
}

/// `partition`: one or two lists of machines (nodes or hosts).
fn partition(d: &mut Decoder, n: &Node, p: &str, topo: &Loaded) -> Option<Fault> {
    let sides: Vec<Vec<String>> = d
        .list(n, p, "`partition`")
        .into_iter()
        .map(|(n, p)| {
            d.list(n, &p, "a side")
                .into_iter()
                .filter_map(|(n, p)| machine(d, n, &p, topo, true))
                .collect()
        })
        .collect();
    if sides.is_empty() || sides.len() > 2 || sides[0].is_empty() {
        d.err(
            &at(n, p),
            "`partition` is one or two lists of machines",
            "write e.g. `partition: [[node1], [node2]]`",
        );
        return None;
    }
    let mut sides = sides.into_iter();
    Some(Fault::Partition(
        sides.next().unwrap_or_default(),
        sides.next().unwrap_or_default(),
    ))
}

/// `scale`: `{rc, replicas}`, the controller one of the topology's.
fn scale(d: &mut Decoder, n: &Node, p: &str, topo: &Loaded) -> Option<Fault> {
    let s = d.obj(n, p, "`scale`", &["rc", "replicas"])?;
    let rc = d
        .required(&s, "rc", "`scale`", "web")
        .and_then(|(n, p)| d.name(n, &p, "`rc`", 63));
    let replicas = d
        .required(&s, "replicas", "`scale`", "3")
        .and_then(|(n, p)| {
            d.int(
                n,
                &p,
                "`replicas`",
                0,
                i64::from(crate::topology::decode::MAX_REPLICAS),
                "write a number of replicas, e.g. 3",
            )
        });
    let rc = rc?;
    if !topo
        .topology
        .controllers
        .iter()
        .any(|c| c.name.value == rc.value)
    {
        d.err(
            &rc.at,
            format!("the topology has no replication controller `{}`", rc.value),
            "name one of the topology's `replicationControllers`",
        );
        return None;
    }
    Some(Fault::Scale {
        rc: rc.value,
        replicas: replicas?.value as u32,
    })
}

impl From<LinkTarget> for Fault {
    fn from(t: LinkTarget) -> Fault {
        Fault::LinkDown(t)
    }
}

fn impair(d: &mut Decoder, node: &Node, path: &str, topo: &Loaded) -> Option<Fault> {
    let obj = d.obj(node, path, "`impair`", IMPAIR)?;
    let node_name = d
        .required(&obj, "node", "`impair`", "node1")
        .and_then(|(n, p)| machine(d, n, &p, topo, false));
    let loss = obj.get("loss").and_then(|(n, p)| {
        d.parsed::<crate::topology::units::Percent>(
            n,
            &p,
            "`loss`",
            "write a percentage such as `1%`",
        )
    });
    let imp = Impairment {
        node: node_name?,
        delay: time(d, &obj, "delay"),
        jitter: time(d, &obj, "jitter"),
        loss_ppm: loss.map(|l| l.value.0),
    };
    if imp.delay.is_none() && imp.jitter.is_none() && imp.loss_ppm.is_none() {
        d.err(
            &obj.at(),
            "`impair` changes nothing",
            "write at least one of `delay`, `jitter` or `loss`",
        );
        return None;
    }
    Some(Fault::Impair(imp))
}
