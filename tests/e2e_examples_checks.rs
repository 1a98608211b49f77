//! Every example topology passes its checks file as it is: each test brings
//! one example up under a unique name and runs `testbed check NAME --checks
//! topologies/checks/EXAMPLE.yaml --json`, which must exit 0 with every
//! check `pass`. Together the files cover bridge, `container:`, `host` and
//! `none` pods, cluster IPs, node ports, external IPs, matrices with
//! expected tables and deny and reject cases. All seven examples run
//! (`large`, 200 pods, is the longest: about 15 s on the 2-core machine).

mod support;

use serde_json::Value;
use support::{check_example, example_up};

/// Runs the example's checks file against it: exit 0, every check passed.
fn checks_pass(example: &str) {
    let tb = example_up(example);
    let (code, json) = check_example(&tb, example);
    assert_eq!(code, Some(0), "{example}: {json}");
    let v: Value = serde_json::from_str(&json).expect("check JSON");
    let checks = v["checks"].as_array().expect("checks");
    assert!(!checks.is_empty(), "{example}: no checks ran");
    for c in checks {
        assert_eq!(c["status"], "pass", "{example}: {c}");
    }
}

#[test]
fn minimal_passes_its_checks() {
    checks_pass("minimal");
}

#[test]
fn web_passes_its_checks() {
    checks_pass("web");
}

#[test]
fn network_modes_pass_their_checks() {
    checks_pass("network-modes");
}

#[test]
fn nodeport_lb_passes_its_checks() {
    checks_pass("nodeport-lb");
}

#[test]
fn hostgw_two_tier_passes_its_checks() {
    checks_pass("hostgw-two-tier");
}

#[test]
fn impaired_links_pass_their_checks() {
    checks_pass("impaired-links");
}

#[test]
fn large_passes_its_checks() {
    checks_pass("large");
}
