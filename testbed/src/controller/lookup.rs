//! Finding what a request names (a pod, node, host or replication
//! controller of the running testbed), and refusing, with the closest
//! existing name, what does not exist. Pure.

use crate::diag::did_you_mean;
use crate::plan::Plan;
use crate::topology::model::Topology;

/// A refusal: the request names something that does not exist or makes no
/// sense; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn missing(what: &str, name: &str, names: &[&str]) -> Refusal {
    let mut msg = format!("there is no {what} `{name}`");
    match did_you_mean(name, names) {
        Some(close) => msg.push_str(&format!("; did you mean `{close}`?")),
        None if names.is_empty() => msg.push_str(&format!(" (the testbed has no {what}s)")),
        None => {
            let mut list: Vec<&str> = names.iter().take(6).copied().collect();
            if names.len() > 6 {
                list.push("...");
            }
            msg.push_str(&format!(" (there are: {})", list.join(", ")));
        }
    }
    Refusal(msg)
}

/// `NAMESPACE/NAME` of the pod `name` names (`NAME` is in `default`).
pub fn pod(plan: &Plan, name: &str) -> Result<String, Refusal> {
    let key = if name.contains('/') {
        name.to_string()
    } else {
        format!("default/{name}")
    };
    let keys: Vec<String> = plan
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    if keys.contains(&key) {
        return Ok(key);
    }
    let short: Vec<String> = keys
        .iter()
        .map(|k| k.strip_prefix("default/").unwrap_or(k).to_string())
        .collect();
    let refs: Vec<&str> = short.iter().map(String::as_str).collect();
    Err(missing("pod", name, &refs))
}

/// Node `name`, which must exist.
pub fn node<'p>(plan: &'p Plan, name: &str) -> Result<&'p crate::plan::types::NodePlan, Refusal> {
    plan.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        missing("node", name, &names)
    })
}

/// Host `name`, which must exist.
pub fn host<'p>(plan: &'p Plan, name: &str) -> Result<&'p crate::plan::types::HostPlan, Refusal> {
    plan.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
        let names: Vec<&str> = plan.hosts.iter().map(|h| h.name.as_str()).collect();
        missing("host", name, &names)
    })
}

/// `NAMESPACE/NAME` of replication controller `name`; a bare pod of that
/// name is refused as such.
pub fn rc(spec: &Topology, plan: &Plan, name: &str) -> Result<String, Refusal> {
    let (ns, short) = name.split_once('/').unwrap_or(("default", name));
    if spec
        .controllers
        .iter()
        .any(|c| c.namespace.value == ns && c.name.value == short)
    {
        return Ok(format!("{ns}/{short}"));
    }
    if plan
        .pods
        .iter()
        .any(|p| p.namespace == ns && p.name == short && p.owner.is_none())
    {
        return Err(Refusal(format!(
            "`{name}` is a bare pod, not a replication controller: only a replication controller's pods can be scaled (delete the pod with `testbed fault delete`, or change the file and `testbed apply` it)"
        )));
    }
    let names: Vec<String> = spec
        .controllers
        .iter()
        .map(|c| {
            if c.namespace.value == "default" {
                c.name.value.clone()
            } else {
                format!("{}/{}", c.namespace.value, c.name.value)
            }
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Err(missing("replication controller", name, &refs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::load;

    const FILE: &str = "
name: t
nodes: [{name: node1}, {name: node2}]
hosts: [{name: client}]
pods:
  - {name: db, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - {name: web, replicas: 2, selector: {app: web}, template: {labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}}
";

    #[test]
    fn names_resolve_and_near_misses_are_suggested() {
        let l = load(FILE);
        assert_eq!(pod(&l.plan, "web-1").unwrap(), "default/web-1");
        assert_eq!(pod(&l.plan, "default/db").unwrap(), "default/db");
        let e = pod(&l.plan, "web-7").unwrap_err().0;
        assert!(
            e.contains("no pod `web-7`") && e.contains("did you mean"),
            "{e}"
        );
        let e = node(&l.plan, "node3").unwrap_err().0;
        assert!(
            e.contains("did you mean `node1`") || e.contains("did you mean `node2`"),
            "{e}"
        );
        assert!(host(&l.plan, "client").is_ok());
        assert!(host(&l.plan, "node1").is_err());
        assert_eq!(rc(&l.topology, &l.plan, "web").unwrap(), "default/web");
        let e = rc(&l.topology, &l.plan, "db").unwrap_err().0;
        assert!(e.contains("bare pod"), "{e}");
        let e = rc(&l.topology, &l.plan, "wbe").unwrap_err().0;
        assert!(e.contains("did you mean `web`"), "{e}");
    }
}
