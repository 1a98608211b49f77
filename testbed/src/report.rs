//! What the CLI prints about testbeds: the summary after `up`, the list of
//! testbeds (`ls`), each as a human table or as JSON.

use crate::kernel::teardown;
use crate::plan::Plan;
use serde::Serialize;
use std::fmt;

/// The short summary `up` prints: nodes, hosts, pods and services with
/// their addresses.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The testbed.
    pub name: String,
    /// `name  address  pod subnet`.
    pub nodes: Vec<[String; 3]>,
    /// `name  address`.
    pub hosts: Vec<[String; 2]>,
    /// `namespace/name  node  address`.
    pub pods: Vec<[String; 3]>,
    /// `namespace/name  type  cluster IP  external IP  ports`.
    pub services: Vec<[String; 5]>,
}

/// The summary of `plan`.
pub fn summary(plan: &Plan) -> Summary {
    Summary {
        name: plan.name.clone(),
        nodes: plan
            .nodes
            .iter()
            .map(|n| [n.name.clone(), n.ip.to_string(), n.lease.subnet.to_string()])
            .collect(),
        hosts: plan
            .hosts
            .iter()
            .map(|h| [h.name.clone(), h.ip.to_string()])
            .collect(),
        pods: plan
            .pods
            .iter()
            .map(|p| {
                let ip = match (&p.ip, p.network.as_str()) {
                    (Some(ip), "bridge") => ip.to_string(),
                    (Some(ip), mode) => format!("{ip} ({mode})"),
                    (None, mode) => format!("- ({mode})"),
                };
                [format!("{}/{}", p.namespace, p.name), p.node.clone(), ip]
            })
            .collect(),
        services: plan
            .services
            .iter()
            .map(|s| {
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .map(|p| match p.node_port {
                        Some(np) => format!("{}:{np}/{}", p.port, p.protocol),
                        None => format!("{}/{}", p.port, p.protocol),
                    })
                    .collect();
                [
                    format!("{}/{}", s.namespace, s.name),
                    format!("{:?}", s.kind),
                    s.cluster_ip.to_string(),
                    s.load_balancer_ip.map_or("-".into(), |ip| ip.to_string()),
                    ports.join(","),
                ]
            })
            .collect(),
    }
}

/// Formats rows as aligned columns under a header.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&table(["NODE", "ADDRESS", "POD SUBNET"], &self.nodes))?;
        if !self.hosts.is_empty() {
            f.write_str("\n")?;
            f.write_str(&table(["HOST", "ADDRESS"], &self.hosts))?;
        }
        if !self.pods.is_empty() {
            f.write_str("\n")?;
            f.write_str(&table(["POD", "NODE", "ADDRESS"], &self.pods))?;
        }
        if !self.services.is_empty() {
            f.write_str("\n")?;
            f.write_str(&table(
                ["SERVICE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS"],
                &self.services,
            ))?;
        }
        Ok(())
    }
}

/// One testbed found on this machine.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// running (supervisor alive), stopped (supervisor gone), or leftovers
    /// (namespaces without a state directory).
    pub state: String,
    /// Its network namespaces.
    pub namespaces: usize,
    /// Pods in its plan.
    pub pods: usize,
}

/// Every testbed on this machine.
pub fn list() -> Vec<Listed> {
    teardown::testbeds()
        .into_iter()
        .map(|name| {
            let plan = crate::lifecycle::running_plan(&name);
            let state = match (&plan, teardown::supervisors(&name).is_empty()) {
                (None, _) => "leftovers",
                (Some(_), false) => "running",
                (Some(_), true) => "stopped",
            };
            Listed {
                namespaces: teardown::namespaces_of(&name).len(),
                pods: plan.map_or(0, |p| p.pods.len()),
                state: state.into(),
                name,
            }
        })
        .collect()
}

/// `ls` as a table.
pub fn list_table(list: &[Listed]) -> String {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.state.clone(),
                l.namespaces.to_string(),
                l.pods.to_string(),
            ]
        })
        .collect();
    table(["NAME", "STATE", "NAMESPACES", "PODS"], &rows)
}
