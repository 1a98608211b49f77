//! tests/network.rs: snapshots of what a topology builds and of what is
//! reachable in it, reviewed like code (see docs/ci.md, "A Rust test with
//! insta snapshots"). Needs `insta = "1"` under `[dev-dependencies]`, the
//! `testbed` binary on the PATH (or in $TESTBED), and root for the second
//! test:
//!
//!     cargo test --test network --no-run
//!     sudo -E env "PATH=$PATH" cargo test --test network
//!
//! Write or update the snapshots with `INSTA_UPDATE=always` and review
//! them with `git diff`; under `CI=true` a missing or different snapshot
//! fails.

use std::process::{Command, Output};

/// The topology and its checks, relative to this crate.
const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/web.yaml");
const CHECKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/checks/web.yaml");
/// The topology's `name:`.
const NAME: &str = "webdemo";

fn testbed(args: &[&str]) -> Output {
    let bin = std::env::var("TESTBED").unwrap_or_else(|_| "testbed".to_string());
    Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The complete desired state: addresses, routes, placements, service IPs
/// and node ports. No root needed; the same bytes every time.
#[test]
fn plan_matches_its_snapshot() {
    let out = testbed(&["plan", "--json", TOPOLOGY]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("plan", stdout(&out));
}

/// Tears the testbed down when the test ends, also when it fails.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = testbed(&["down", NAME]);
    }
}

/// What is reachable, check by check and pair by pair (no timings, so the
/// same cluster gives the same bytes).
#[test]
fn checks_match_their_snapshot() {
    let up = testbed(&["up", TOPOLOGY, "--timeout", "60s"]);
    let _down = Down;
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let out = testbed(&["check", NAME, "--checks", CHECKS, "--json"]);
    insta::assert_snapshot!("checks", stdout(&out));
    assert_eq!(out.status.code(), Some(0), "a check failed: see the snapshot diff");
}
