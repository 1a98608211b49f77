//! The insta approach of `docs/ci.md`, run on this repository's own
//! examples: the plan of `topologies/web.yaml` as `testbed plan --json`
//! prints it (no root needed) and `testbed check --json` of the running
//! example with `topologies/checks/web.yaml` (root), each compared with its
//! reviewed snapshot under `tests/snapshots/`. Under `CI=true` insta does
//! not write snapshots (`INSTA_UPDATE=no`): a missing or different one
//! fails the test. The check report names the testbed, whose name is
//! unique per run here, so that one field is replaced before comparing.

mod support;

use support::{check_example, example_up, ok, repo};

#[test]
fn plan_json_of_the_web_example() {
    let file = repo().join("topologies/web.yaml");
    let plan = ok(&["plan", "--json", file.to_str().expect("utf-8")]);
    insta::assert_snapshot!("plan-json-web", plan);
}

#[test]
fn check_json_of_the_running_web_example() {
    let tb = example_up("web");
    let (code, json) = check_example(&tb, "web");
    assert_eq!(code, Some(0), "{json}");
    let json = json.replace(
        &format!("\"testbed\": \"{}\"", tb.name),
        "\"testbed\": \"webdemo\"",
    );
    insta::assert_snapshot!("check-json-web", json);
}
