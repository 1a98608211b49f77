//! Synthetic run inputs for the results module's tests.

use super::{CheckRecord, FaultInput, Meta, RunInput, Seeded, Verified};
use crate::check::Endpoint;
use crate::experiment::schedule::{Combination, Setting};
use crate::experiment::{Workload, WorkloadKind};
use crate::traffic::{Sample, SampleOutcome};
use std::collections::BTreeMap;
use std::time::Duration;

/// A workload `name` of `kind` over `secs` seconds.
pub fn workload(name: &str, kind: WorkloadKind, secs: u64) -> Workload {
    Workload {
        name: name.to_string(),
        kind,
        from: Endpoint::Host("client".into()),
        to: Endpoint::Service {
            name: "web".into(),
            namespace: "shop".into(),
        },
        port: Some(80),
        rate: 10,
        streams: 1,
        start: Duration::ZERO,
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(1),
    }
}

/// A sample of `workload` sent at `ms` with `outcome` and latency `lat_us`.
pub fn sample(workload: &str, ms: u64, outcome: SampleOutcome, lat_us: u64) -> Sample {
    Sample {
        workload: workload.to_string(),
        source: "host client".into(),
        send_us: ms * 1000,
        sent_us: ms * 1000 + 50,
        latency_us: lat_us,
        outcome,
        bytes: if outcome == SampleOutcome::Ok { 12 } else { 0 },
        backend: (outcome == SampleOutcome::Ok).then(|| format!("shop/web-{}", ms / 100 % 2)),
    }
}

/// Sends of `workload` every 100 ms over [from_ms, to_ms), failing with
/// `timeout` in `[fail_from, fail_to)`.
pub fn series(workload: &str, from_ms: u64, to_ms: u64, fail: (u64, u64)) -> Vec<Sample> {
    (from_ms..to_ms)
        .step_by(100)
        .map(|ms| {
            if ms >= fail.0 && ms < fail.1 {
                sample(workload, ms, SampleOutcome::Timeout, 1_000_000)
            } else {
                sample(workload, ms, SampleOutcome::Ok, 800 + ms % 700)
            }
        })
        .collect()
}

/// The combination `proxy=VALUE,overlay=OV` (values may hold a `/`).
pub fn combination(proxy: &str, overlay: &str) -> Combination {
    Combination {
        name: format!("proxy={proxy},overlay={overlay}"),
        params: vec![
            Setting {
                path: "cluster.proxy".into(),
                value: proxy.into(),
            },
            Setting {
                path: "cluster.overlay".into(),
                value: overlay.into(),
            },
        ],
    }
}

/// A seeded section that depends on `seed` only.
pub fn seeded(seed: u64) -> Seeded {
    Seeded {
        plan_sha256: format!("{seed:064x}"),
        schedule: serde_json::json!({"seed": seed, "timeline": [{"atUs": 2_000_000, "what": "kill pod shop/web-1"}]}),
        fault_targets: vec!["kill pod shop/web-1".into()],
        balancer_order: BTreeMap::from([(
            "shop/web:80/tcp".to_string(),
            vec![
                "shop/web-0 10.244.1.2:8080".to_string(),
                "shop/web-1 10.244.2.2:8080".to_string(),
            ],
        )]),
        impairment_fates: BTreeMap::from([(
            "node1/egress".to_string(),
            format!("{:064x}", seed * 3),
        )]),
    }
}

/// A run of 6 s: `http` fails from 2 s to 3 s after a fault at 2 s (so it
/// recovers after 1 s), `ping` never fails.
pub fn run_input(c: &Combination, rep: u32, seed: u64) -> RunInput {
    let mut samples = series("http", 0, 6000, (2000, 3000 + u64::from(rep) * 100));
    samples.extend(series("ping", 0, 6000, (0, 0)));
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
            workload("http", WorkloadKind::Http, 6),
            workload("ping", WorkloadKind::Ping, 6),
        ],
        samples,
        faults: vec![FaultInput {
            at_ms: 2000.0,
            until_ms: Some(4000.0),
            spec: "kill pod shop/web-1".into(),
            error: None,
        }],
        checks: vec![CheckRecord {
            name: "web-from-clients".into(),
            at: 5000,
            status: "pass".into(),
        }],
        execs: Vec::new(),
        seeded: seeded(seed),
        verified: Verified {
            ok: true,
            after_ms: 300,
            differences: Vec::new(),
        },
        interrupted: false,
    }
}
