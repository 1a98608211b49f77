//! Every example experiment under `topologies/experiments/` is valid: its
//! schedule prints (`testbed run FILE --dry-run`, no root needed), twice
//! the same, and each topology written for them (`*.topology.yaml`) plans.

mod support;

use std::path::PathBuf;
use support::{ok, repo};

/// The files of `topologies/experiments/`: (experiments, topologies).
fn files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dir = repo().join("topologies/experiments");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("topologies/experiments/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    all.into_iter().partition(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".topology.yaml"))
    })
}

#[test]
fn every_example_experiment_has_a_schedule() {
    let (experiments, _) = files();
    assert!(experiments.len() >= 4, "{experiments:?}");
    for file in experiments {
        let f = file.to_str().expect("utf-8");
        let once = ok(&["run", f, "--dry-run"]);
        assert!(once.starts_with("experiment "), "{f}: {once}");
        assert_eq!(once, ok(&["run", f, "--dry-run"]), "{f}: the same twice");
    }
}

#[test]
fn every_experiment_topology_plans() {
    let (_, topologies) = files();
    assert!(topologies.len() >= 3, "{topologies:?}");
    for file in topologies {
        ok(&["plan", file.to_str().expect("utf-8")]);
    }
}
