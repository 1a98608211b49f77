//! A small recorded experiment written through the library as `testbed
//! run` writes one: two combinations (one value with a `/`), two
//! repetitions, two workloads, a fault that one combination never recovers
//! from, a refused fault, a check and an exec step. Every field of
//! `run.json` and `summary.json` has a value somewhere.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use testbed::check::Endpoint;
use testbed::experiment::schedule::{Combination, Run, Sends, Setting, Step};
use testbed::experiment::{Workload, WorkloadKind};
use testbed::results::{
    self, CheckRecord, ExecRecord, FaultInput, Meta, RunInput, RunRecord, Seeded, Verified,
};
use testbed::traffic::{Sample, SampleOutcome};

fn workload(name: &str, kind: WorkloadKind) -> Workload {
    Workload {
        name: name.into(),
        kind,
        from: Endpoint::Host("client".into()),
        to: Endpoint::Host("server".into()),
        port: Some(80),
        rate: 10,
        streams: 1,
        start: Duration::ZERO,
        duration: Duration::from_secs(4),
        timeout: Duration::from_secs(1),
    }
}

/// Sends every 100 ms over 4 s, failing from `fail.0` to `fail.1` ms.
fn samples(name: &str, fail: (u64, u64)) -> Vec<Sample> {
    (0..4000)
        .step_by(100)
        .map(|ms| {
            let bad = ms >= fail.0 && ms < fail.1;
            Sample {
                workload: name.into(),
                source: "host client".into(),
                send_us: ms * 1000,
                sent_us: ms * 1000 + 30,
                latency_us: if bad { 1_000_000 } else { 500 + ms },
                outcome: if bad {
                    SampleOutcome::Timeout
                } else {
                    SampleOutcome::Ok
                },
                bytes: if bad { 0 } else { 20 },
                backend: (!bad).then(|| format!("shop/web-{}", ms / 100 % 2)),
            }
        })
        .collect()
}

fn seeded(c: &Combination, rep: u32, seed: u64) -> Seeded {
    let run = Run {
        combination: c.name.clone(),
        rep,
        seed,
        workloads: vec![Sends {
            name: "http".into(),
            count: 40,
            start_us: 0,
            first_us: vec![0, 100_000],
            rate: 10,
            phase_ppm: seed * 1000,
        }],
        timeline: vec![Step {
            at_us: 1_000_000,
            until_us: Some(2_000_000),
            what: "kill pod shop/web-1".into(),
        }],
    };
    Seeded {
        plan_sha256: format!("{seed:064x}"),
        schedule: serde_json::to_value(&run).unwrap(),
        fault_targets: vec!["kill pod shop/web-1".into()],
        balancer_order: BTreeMap::from([(
            "shop/web:80/tcp".into(),
            vec![format!("web-{} 10.244.1.2:8080", seed % 2)],
        )]),
        impairment_fates: BTreeMap::from([("node1/egress".into(), format!("{:064x}", seed * 3))]),
    }
}

fn input(c: &Combination, rep: u32, seed: u64) -> RunInput {
    let never = c.name.contains('/');
    let mut all = samples("http", (1000, if never { 4000 } else { 1500 }));
    all.extend(samples("ping", (0, 0)));
    RunInput {
        experiment: "failover".into(),
        combination: c.clone(),
        rep,
        seed,
        meta: Meta {
            topology_sha256: "ab".repeat(32),
            plan_sha256: format!("{seed:064x}"),
            testbed_version: "0.1.0".into(),
            kernel: "6.1.0".into(),
            cpus: 2,
            started: "2026-11-28T22:15:00Z".into(),
            testbed: "failover".into(),
        },
        workloads: vec![
            workload("http", WorkloadKind::Http),
            workload("ping", WorkloadKind::Ping),
        ],
        samples: all,
        faults: vec![
            FaultInput {
                at_ms: 1000.0,
                until_ms: Some(2000.0),
                spec: "kill pod shop/web-1".into(),
                error: None,
            },
            FaultInput {
                at_ms: 3000.0,
                until_ms: None,
                spec: "nodeDown node9".into(),
                error: Some("no node node9".into()),
            },
        ],
        checks: vec![CheckRecord {
            name: "web".into(),
            at: 3500,
            status: "pass".into(),
        }],
        execs: vec![ExecRecord {
            at: 3600,
            pod: "toolbox".into(),
            command: vec!["ip".into(), "route".into()],
            exit: Some(0),
            output: "exec/0.txt".into(),
        }],
        seeded: seeded(c, rep, seed),
        verified: Verified {
            ok: !never,
            after_ms: 250,
            differences: if never {
                vec!["pod shop/web-1 missing".into()]
            } else {
                Vec::new()
            },
        },
        interrupted: false,
    }
}

fn combination(proxy: &str, cidr: &str) -> Combination {
    Combination {
        name: format!("proxy={proxy},cidr={cidr}"),
        params: vec![
            Setting {
                path: "cluster.proxy".into(),
                value: proxy.into(),
            },
            Setting {
                path: "cluster.podCIDR".into(),
                value: cidr.into(),
            },
        ],
    }
}

/// Writes the experiment into `dir` with base seed `seed`.
pub fn write(dir: &Path, seed: u64) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for c in [
        combination("iptables", "default"),
        combination("userspace", "10.0.0.0/8"),
    ] {
        for rep in 0..2 {
            let run = dir
                .join(results::combination_dir(&c.name))
                .join(format!("rep-{rep}"));
            std::fs::create_dir_all(&run).unwrap();
            runs.push(results::write_run(&run, input(&c, rep, seed + u64::from(rep))).unwrap());
        }
    }
    results::write_experiment(dir, "failover", &runs, false).unwrap();
    runs
}
