//! `testbed check` on a real testbed: allow (HTTP through a service, with
//! its body), reject (a closed port), ICMP from every pod, a matrix, a
//! warning-level failure (exit 3), `--only`, `--json` (the same bytes
//! twice), `--junit`, and a separate checks file whose `drop` passes only
//! while a partition is in force.

mod support;

use serde_json::Value;
use support::{ok, testbed, Testbed};

const TOPOLOGY: &str = "
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: client, node: n1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: lonely, node: n2, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - name: web
    replicas: 2
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: http, command: [python3, -m, http.server, '8080'], workingDir: /, ready: {tcp: 8080}}]
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
checks:
  - {name: web-from-client, from: pod client, to: service web, port: http/80, body: Directory listing}
  - {name: lonely-closed, from: pod client, to: pod lonely, port: tcp/80, expect: reject}
  - {name: everyone-pings-client, from: {allPods: true}, to: pod client, port: icmp}
  - name: web-matrix
    matrix: {from: {rc: web}, to: {allPods: true}, port: icmp}
    ignoreSelf: true
  - {name: lonely-open, from: pod client, to: pod lonely, port: tcp/80, within: 1s, level: warning}
";

fn code_and_out(args: &[&str]) -> (Option<i32>, String, String) {
    let out = testbed(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn checks_pass_fail_and_report() {
    let tb = Testbed::new("chk", TOPOLOGY).up();
    let (code, out, err) = code_and_out(&["check", &tb.name]);
    assert_eq!(code, Some(3), "only a warning failed: {out}{err}");
    for line in [
        "PASS  web-from-client",
        "PASS  lonely-closed",
        "PASS  everyone-pings-client",
        "PASS  web-matrix",
        "WARN  lonely-open",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    assert!(out.contains("expected allow, got refused"), "{out}");

    let (code, json, _) = code_and_out(&["check", &tb.name, "--json", "--only", "lonely-c*"]);
    assert_eq!(code, Some(0), "{json}");
    let again = code_and_out(&["check", &tb.name, "--json", "--only", "lonely-c*"]).1;
    assert_eq!(json, again, "the same cluster gives the same bytes");
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["schema"], "testbed.check/1");
    assert_eq!(v["checks"][0]["status"], "pass");
    assert_eq!(v["checks"][0]["pairs"][0]["actual"], "refused");

    let junit = tb.dir.path().join("junit.xml");
    let j = junit.to_str().expect("utf-8");
    let (code, _, _) = code_and_out(&["check", &tb.name, "--junit", j]);
    assert_eq!(code, Some(3));
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&junit)
        .expect("junit")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "a report CI steps (not root) can read");
    assert!(xml.contains("tests=\"5\" failures=\"1\""), "{xml}");
    assert!(xml.contains("<failure type=\"warning\""), "{xml}");

    // A file of checks: dropped only while n1 is cut off from n2.
    let file = tb.dir.path().join("cut.yaml");
    std::fs::write(
        &file,
        "checks:\n  - {name: cut, from: pod client, to: pod lonely, port: icmp, expect: drop, for: 1s}\n",
    )
    .expect("write checks");
    let f = file.to_str().expect("utf-8");
    let (code, out, _) = code_and_out(&["check", &tb.name, "--checks", f]);
    assert_eq!(code, Some(1), "not cut yet: {out}");
    ok(&["fault", "-t", &tb.name, "partition", "n1", "--from", "n2"]);
    let (code, out, _) = code_and_out(&["check", &tb.name, "--checks", f]);
    assert_eq!(code, Some(0), "cut: {out}");
    ok(&["fault", "-t", &tb.name, "clear"]);

    // Bad input: exit 2, located.
    std::fs::write(
        &file,
        "checks:\n  - {name: x, from: pod nobody, to: pod client}\n",
    )
    .expect("write checks");
    let (code, _, err) = code_and_out(&["check", &tb.name, "--checks", f]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nobody"), "{err}");
    let (code, _, err) = code_and_out(&["check", &tb.name, "--only", "nothing-*"]);
    assert_eq!(code, Some(2), "{err}");
}
