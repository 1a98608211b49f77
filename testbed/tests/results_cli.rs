//! `testbed results` and `testbed results diff` on recorded results in
//! private temporary directories: the summary printed, exit codes (0 equal,
//! 1 a seeded quantity differs, 2 bad input), and the SVGs opened by a
//! real SVG parser.

mod results_fixture;

use std::path::Path;
use std::process::{Command, Output};

fn testbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .output()
        .expect("the testbed binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn results_prints_an_experiment_and_a_run() {
    let dir = tempfile::tempdir().unwrap();
    results_fixture::write(dir.path(), 7);
    let out = testbed(&["results", &s(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.contains("experiment failover"), "{o}");
    assert!(
        o.contains("proxy=userspace,cidr=10.0.0.0/8 (seeds 7, 8)"),
        "{o}"
    );
    assert!(
        o.contains("fault kill pod shop/web-1: recovery never, never"),
        "{o}"
    );
    let run = dir.path().join("proxy=iptables,cidr=default/rep-1");
    let out = testbed(&["results", &s(&run)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rep 1 (seed 8)"),
        "{}",
        text(&out.stdout)
    );
    let out = testbed(&["results", "--json", &s(&run)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "testbed.run/1");
}

#[test]
fn diff_exits_0_on_equal_seeds_and_1_naming_the_field_otherwise() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    results_fixture::write(a.path(), 7);
    results_fixture::write(b.path(), 7);
    results_fixture::write(c.path(), 8);
    let out = testbed(&["results", "diff", &s(a.path()), &s(b.path())]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = testbed(&["results", "diff", &s(a.path()), &s(c.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(
        o.contains("SEEDED DIFFERS seeded.impairmentFates[\"node1/egress\"]"),
        "{o}"
    );
    let out = testbed(&["results", "diff", "--json", &s(a.path()), &s(c.path())]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seededEqual"], false);
}

#[test]
fn bad_input_exits_2_with_the_path() {
    let a = tempfile::tempdir().unwrap();
    results_fixture::write(a.path(), 7);
    let missing = a.path().join("missing");
    for args in [
        vec!["results".to_string(), s(&missing)],
        vec!["results".into(), "diff".into(), s(a.path()), s(&missing)],
        vec![
            "results".into(),
            "diff".into(),
            s(&a.path().join("plots")),
            s(a.path()),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = testbed(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains(a.path().to_str().unwrap()),
            "{}",
            text(&out.stderr)
        );
    }
    std::fs::write(
        a.path().join("summary.json"),
        r#"{"schema": "testbed.run/1"}"#,
    )
    .unwrap();
    let out = testbed(&["results", &s(a.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected `testbed.summary/1`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_plot_opens_in_an_svg_parser() {
    fn walk(dir: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "svg") {
                let data = std::fs::read(&p).unwrap();
                let tree = usvg::Tree::from_data(&data, &usvg::Options::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(tree.root().has_children(), "{}", p.display());
                *n += 1;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    results_fixture::write(dir.path(), 7);
    let mut n = 0;
    walk(dir.path(), &mut n);
    assert_eq!(n, 3 + 4 * 2, "3 experiment plots, 2 per run");
}
