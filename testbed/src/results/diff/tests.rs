use super::*;
use crate::results::files::tests::write_example;

#[test]
fn the_same_seed_gives_no_seeded_difference() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_example(a.path(), 7, false);
    write_example(b.path(), 7, false);
    let d = diff_dirs(a.path(), b.path()).unwrap();
    assert!(d.seeded_equal, "{}", render(&d));
    assert_eq!(d.runs.len(), 4);
    assert!(d.runs.iter().all(|r| r.seeded.is_empty()));
    assert!(render(&d).contains("seeded quantities: equal in all 4 run(s)"));
}

#[test]
fn another_seed_is_reported_by_run_and_field() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_example(a.path(), 7, false);
    write_example(b.path(), 9, false);
    let d = diff_dirs(a.path(), b.path()).unwrap();
    assert!(!d.seeded_equal);
    let r = &d.runs[0];
    assert_eq!(r.run, "proxy=iptables,overlay=udp/rep-0");
    let fields: Vec<&str> = r.seeded.iter().map(|f| f.field.as_str()).collect();
    assert!(fields.contains(&"seed"), "{fields:?}");
    assert!(fields.contains(&"seeded.planSha256"), "{fields:?}");
    assert!(fields.contains(&"seeded.schedule.seed"), "{fields:?}");
    assert!(
        fields.contains(&"seeded.impairmentFates[\"node1/egress\"]"),
        "{fields:?}"
    );
    assert!(render(&d).contains("SEEDED DIFFERS seeded.planSha256"));
}

#[test]
fn measured_values_come_with_their_change() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = write_example(a.path(), 7, false);
    let mut rb = write_example(b.path(), 7, false);
    rb[0].workloads[0].latency_ms.as_mut().unwrap().p50 *= 2.0;
    rb.pop();
    let d = diff(&ra, &rb, false);
    assert!(!d.seeded_equal, "a run missing on one side");
    assert_eq!(
        d.only_in_a,
        vec!["proxy=userspace,overlay=10.0.0.0%2F8/rep-1".to_string()]
    );
    let p50 = d.runs[0]
        .measured
        .iter()
        .find(|c| c.what == "http.latencyMs.p50")
        .unwrap();
    assert_eq!(p50.change_percent, Some(100.0));
    let rec = d.runs[2]
        .measured
        .iter()
        .find(|c| c.what == "fault 1.recoveryMs")
        .unwrap();
    assert_eq!((rec.a, rec.b, rec.change), (None, None, None));
    let json = serde_json::to_string(&d).unwrap();
    assert!(!json.contains("null"), "{json}");
}

#[test]
fn two_single_runs_are_compared_whatever_their_names() {
    let (a, _b) = (tempfile::tempdir().unwrap(), ());
    let runs = write_example(a.path(), 7, false);
    let d = diff(&runs[0..1], &runs[1..2], true);
    assert_eq!(d.runs.len(), 1);
    assert!(d.runs[0].seeded.iter().any(|f| f.field == "seed"));
}

#[test]
fn bad_input_is_an_error_naming_the_path() {
    let a = tempfile::tempdir().unwrap();
    write_example(a.path(), 7, false);
    let e = diff_dirs(a.path(), &a.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
    let plots = a.path().join("plots");
    let e = diff_dirs(a.path(), &plots).unwrap_err().to_string();
    assert!(e.contains("not a results directory"), "{e}");
}
