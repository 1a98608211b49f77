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

/// `testbed status`: machines, pods with their phase and restarts, services
/// with their endpoints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The testbed.
    pub name: String,
    /// Whether its supervisor runs.
    pub supervisor: bool,
    /// `name  address  pod subnet`.
    pub nodes: Vec<[String; 3]>,
    /// `name  address  phase`.
    pub hosts: Vec<[String; 3]>,
    /// `namespace/name  node  address  phase  restarts`.
    pub pods: Vec<[String; 5]>,
    /// `namespace/name  type  cluster IP  external IP  endpoints` (those of
    /// ready pods: what the proxies hold).
    pub services: Vec<[String; 5]>,
    /// Each udp overlay daemon's counters, by node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overlay: Vec<(String, serde_json::Value)>,
    /// The supervisor's word on every container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<crate::runtime::status::ContainerStatus>,
}

/// A pod's or host's phase from its containers, as Kubernetes names them:
/// Running (all running and ready), Succeeded (all ended well), Failed (one
/// failed for good), Pending otherwise.
fn phase(cs: &[&crate::runtime::status::ContainerStatus]) -> &'static str {
    use crate::runtime::status::State;
    if cs.is_empty() {
        return "Unknown";
    }
    if cs.iter().any(|c| c.state == State::Failed) {
        "Failed"
    } else if cs.iter().all(|c| c.state == State::Exited) {
        "Succeeded"
    } else if cs.iter().all(|c| c.settled()) {
        "Running"
    } else {
        "Pending"
    }
}

/// The status of running testbed `plan`.
pub fn status(plan: &Plan) -> StatusReport {
    use crate::runtime::status::ContainerStatus;
    let containers: Vec<ContainerStatus> =
        crate::runtime::status::read(std::path::Path::new(&plan.state_dir))
            .map(|s| s.containers)
            .unwrap_or_default();
    let of = |ns: Option<&str>, owner: &str| -> Vec<&ContainerStatus> {
        containers
            .iter()
            .filter(|c| c.owner == owner && c.namespace.as_deref() == ns)
            .collect()
    };
    let base = summary(plan);
    // Endpoints are the serving pods', as the proxies hold them (every
    // pod's while the supervisor has said nothing yet).
    let ready = if containers.is_empty() {
        crate::services::endpoints::all_pods(plan)
    } else {
        crate::services::endpoints::serving(&containers)
    };
    let live = crate::services::with_ready_endpoints(plan, &ready);
    StatusReport {
        name: plan.name.clone(),
        supervisor: !teardown::supervisors(&plan.name).is_empty(),
        nodes: base.nodes,
        hosts: plan
            .hosts
            .iter()
            .map(|h| {
                let cs = of(None, &h.name);
                let phase = if h.containers.is_empty() {
                    "-"
                } else {
                    phase(&cs)
                };
                [h.name.clone(), h.ip.to_string(), phase.to_string()]
            })
            .collect(),
        pods: plan
            .pods
            .iter()
            .zip(base.pods)
            .map(|(p, [name, node, ip])| {
                let cs = of(Some(&p.namespace), &p.name);
                let restarts: u32 = cs.iter().map(|c| c.restarts).sum();
                [name, node, ip, phase(&cs).to_string(), restarts.to_string()]
            })
            .collect(),
        services: live
            .iter()
            .zip(base.services)
            .map(|(s, [name, kind, ip, ext, _])| {
                let mut eps: Vec<String> = s
                    .ports
                    .iter()
                    .flat_map(|p| p.endpoints.iter().map(|e| format!("{}:{}", e.ip, e.port)))
                    .collect();
                eps.dedup();
                let eps = if eps.is_empty() {
                    "<none>".to_string()
                } else {
                    eps.join(",")
                };
                [name, kind, ip, ext, eps]
            })
            .collect(),
        overlay: crate::overlay_run::stats(plan),
        containers,
    }
}

/// One line of a daemon's counters: packets each way and drops by reason.
fn overlay_line(node: &str, v: &serde_json::Value) -> [String; 4] {
    let n = |path: &[&str]| path.iter().fold(v, |x, k| &x[*k]).as_u64().unwrap_or(0);
    let drops: Vec<String> = v["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| x.as_u64().filter(|c| *c > 0).map(|c| format!("{k}={c}")))
                .collect()
        })
        .unwrap_or_default();
    [
        node.to_string(),
        format!(
            "{} pkts / {} B",
            n(&["tunToUdp", "packets"]),
            n(&["tunToUdp", "bytes"])
        ),
        format!(
            "{} pkts / {} B",
            n(&["udpToTun", "packets"]),
            n(&["udpToTun", "bytes"])
        ),
        if drops.is_empty() {
            "-".into()
        } else {
            drops.join(" ")
        },
    ]
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "testbed {} (supervisor {})\n",
            self.name,
            if self.supervisor {
                "running"
            } else {
                "not running"
            }
        )?;
        f.write_str(&table(["NODE", "ADDRESS", "POD SUBNET"], &self.nodes))?;
        if !self.hosts.is_empty() {
            f.write_str("\n")?;
            f.write_str(&table(["HOST", "ADDRESS", "PHASE"], &self.hosts))?;
        }
        if !self.pods.is_empty() {
            f.write_str("\n")?;
            f.write_str(&table(
                ["POD", "NODE", "ADDRESS", "PHASE", "RESTARTS"],
                &self.pods,
            ))?;
        }
        if !self.services.is_empty() {
            f.write_str("\n")?;
            f.write_str(&table(
                ["SERVICE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "ENDPOINTS"],
                &self.services,
            ))?;
        }
        if !self.overlay.is_empty() {
            let rows: Vec<[String; 4]> = self
                .overlay
                .iter()
                .map(|(n, v)| overlay_line(n, v))
                .collect();
            f.write_str("\n")?;
            f.write_str(&table(
                ["OVERLAY", "SENT (TUN->UDP)", "RECEIVED (UDP->TUN)", "DROPS"],
                &rows,
            ))?;
            for (node, v) in &self.overlay {
                for b in v["badLeases"].as_array().into_iter().flatten() {
                    let text = |k: &str| b[k].as_str().unwrap_or("?").to_string();
                    writeln!(
                        f,
                        "{node}: lease file {} skipped ({}); the lease it last held is kept",
                        text("file"),
                        text("error")
                    )?;
                }
            }
        }
        Ok(())
    }
}
