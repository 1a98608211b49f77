//! A run's workloads as generators (pure): each workload's `from` and `to`
//! resolved against the run's plan as a check's would be (a selector of
//! several sources gives one generator each, in plan order), with the
//! run's send times.

use crate::check::{resolve, Check, CheckKind, Level, Port};
use crate::experiment::schedule::Run;
use crate::experiment::{Workload, WorkloadKind};
use crate::plan::Plan;
use crate::traffic::Generator;

/// The generators of `workloads` in `plan`, with the send times of `run`
/// (whose `workloads` are in the same order), or the first workload that
/// cannot be resolved and why.
pub fn generators(
    plan: &Plan,
    workloads: &[Workload],
    run: &Run,
) -> Result<Vec<Generator>, String> {
    let mut out = Vec::new();
    for (w, sends) in workloads.iter().zip(&run.workloads) {
        let port = w.port.map(|n| match w.kind {
            WorkloadKind::Http => Port::Http {
                port: n,
                path: "/".to_string(),
            },
            WorkloadKind::TcpConnect | WorkloadKind::TcpStream => Port::Tcp(n),
            WorkloadKind::UdpEcho => Port::Udp(n),
            WorkloadKind::Ping => Port::Icmp,
        });
        let port = if w.kind == WorkloadKind::Ping {
            Some(Port::Icmp)
        } else {
            port
        };
        let check = Check {
            name: w.name.clone(),
            kind: CheckKind::Matrix {
                from: w.from.clone(),
                to: w.to.clone(),
                port,
                ignore_self: false,
                expect_table: None,
            },
            level: Level::Error,
        };
        let resolved =
            resolve::resolve(plan, &check).map_err(|e| format!("workload {}: {e}", w.name))?;
        if resolved.probes.is_empty() {
            return Err(format!("workload {}: no source or no target", w.name));
        }
        for p in resolved.probes {
            let (number, path) = match (&p.port, w.kind) {
                (_, WorkloadKind::Ping) => (0, String::new()),
                (Port::Tcp(n) | Port::Udp(n), _) => (*n, "/".to_string()),
                (Port::Http { port, path }, _) => (*port, path.clone()),
                (Port::Icmp, _) => {
                    return Err(format!(
                        "workload {}: {} needs a port (only a service target has a default one)",
                        w.name, p.to
                    ))
                }
            };
            out.push(Generator {
                workload: w.name.clone(),
                kind: w.kind,
                source: p.from.clone(),
                netns: p.netns.clone(),
                addr: p.addr,
                port: number,
                path,
                sends: sends.clone(),
                timeout: w.timeout,
                streams: w.streams,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{schedule, spec};

    const TOPO: &str = "name: wl\nnodes: [{name: n1}, {name: n2}]\n\
        pods:\n  - {name: client, node: n1, labels: {app: c}, containers: [{name: c, command: [sleep, inf]}]}\n  \
        - {name: client2, node: n2, labels: {app: c}, containers: [{name: c, command: [sleep, inf]}]}\n\
        replicationControllers:\n  - name: web\n    replicas: 2\n    selector: {app: web}\n    template:\n      \
        labels: {app: web}\n      containers: [{name: w, command: [sleep, inf]}]\n\
        services:\n  - name: web\n    selector: {app: web}\n    ports: [{port: 80, targetPort: 8080}]\n";

    fn experiment(workloads: &str) -> (crate::experiment::Experiment, Plan, Run) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.yaml"), TOPO).unwrap();
        let file = dir.path().join("e.yaml");
        std::fs::write(
            &file,
            format!("experiment: e\ntopology: t.yaml\nseed: 3\nworkloads:\n{workloads}"),
        )
        .unwrap();
        let exp = spec::read(&file).unwrap();
        let sched = schedule::schedule(&exp, &schedule::Options::default()).unwrap();
        let plan = crate::load_str("t.yaml", TOPO.to_string()).unwrap().plan;
        (exp, plan, sched.runs[0].clone())
    }

    #[test]
    fn a_selector_of_sources_gives_one_generator_each_with_the_services_first_port() {
        let (exp, plan, run) = experiment(
            "  - {name: h, kind: http, from: {pods: {app: c}}, to: service web, rate: 10/s, duration: 1s}\n",
        );
        let g = generators(&plan, &exp.workloads, &run).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].source, "pod client");
        assert_eq!(g[1].source, "pod client2");
        assert_eq!(g[0].port, 80);
        assert_eq!(g[0].path, "/");
        assert_eq!(g[0].sends, run.workloads[0]);
        let svc = plan.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(g[0].addr, svc.cluster_ip);
    }

    #[test]
    fn ping_has_no_port_and_a_pod_target_without_a_port_is_an_error() {
        let (exp, plan, run) = experiment(
            "  - {name: p, kind: ping, from: pod client, to: pod client2, rate: 10/s, duration: 1s}\n",
        );
        let g = generators(&plan, &exp.workloads, &run).unwrap();
        assert_eq!((g.len(), g[0].port), (1, 0));
        let (exp, plan, run) = experiment(
            "  - {name: t, kind: tcpConnect, from: pod client, to: pod client2, rate: 10/s, duration: 1s}\n",
        );
        match generators(&plan, &exp.workloads, &run) {
            Err(e) => assert!(e.contains("needs a port"), "{e}"),
            Ok(g) => panic!("resolved without a port: {g:?}"),
        }
    }
}
