use super::*;
use crate::results::testutil::{combination, run_input, sample};
use crate::results::{read_experiment, write_experiment};
use std::time::{Duration, UNIX_EPOCH};

/// Every SVG under `dir` (recursively) parses as SVG for a renderer.
fn assert_svgs_open(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += assert_svgs_open(&p);
        } else if p.extension().is_some_and(|x| x == "svg") {
            let data = std::fs::read(&p).unwrap();
            let tree = usvg::Tree::from_data(&data, &usvg::Options::default())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(tree.size().width() > 100.0, "{}", p.display());
            assert!(tree.root().has_children(), "{} draws nothing", p.display());
            n += 1;
        }
    }
    n
}

#[test]
fn run_ids_are_utc_seconds() {
    let t = UNIX_EPOCH + Duration::from_millis(1_795_904_100_999);
    assert_eq!(run_id(t), "20261128T221500Z");
    assert_eq!(run_id(UNIX_EPOCH), "19700101T000000Z");
}

#[test]
fn combination_dirs_are_one_safe_component_and_reversible() {
    for name in [
        "proxy=nftables,overlay=udp",
        "cidr=10.0.0.0/8",
        ".",
        "..",
        "a/../b",
        "100%",
        "space here",
        "é",
        "",
        "default",
    ] {
        let d = combination_dir(name);
        assert!(!d.is_empty() && d != "." && d != "..", "{name:?} -> {d:?}");
        assert!(!d.contains('/') && !d.contains('\0'), "{name:?} -> {d:?}");
        assert_eq!(Path::new(&d).components().count(), 1, "{name:?} -> {d:?}");
        assert_eq!(combination_name(&d).as_deref(), Some(name), "{d}");
    }
    assert_eq!(combination_dir("cidr=10.0.0.0/8"), "cidr=10.0.0.0%2F8");
    let long = "x=".to_string() + &"/".repeat(300);
    let d = combination_dir(&long);
    assert!(d.len() <= MAX_DIR_LEN && d.contains('~'), "{d}");
    assert_ne!(d, combination_dir(&("x=".to_string() + &"/".repeat(301))));
}

#[test]
fn samples_csv_round_trips_with_escaped_fields() {
    let mut s = vec![
        sample("http", 1, SampleOutcome::Ok, 900),
        sample("http", 2, SampleOutcome::Refused, 5),
    ];
    s[0].source = "pod a,\"b\"\nc".into();
    s[0].backend = Some("shop/web, 1".into());
    let text = samples_csv(&s);
    assert!(text.starts_with(CSV_HEADER));
    assert_eq!(parse_samples(Path::new("x.csv"), &text).unwrap(), s);
}

#[test]
fn bad_samples_csv_names_file_and_line() {
    let p = Path::new("/r/samples.csv");
    let e = parse_samples(p, "nope\n").unwrap_err().to_string();
    assert!(e.starts_with("/r/samples.csv:1: the header"), "{e}");
    let text = format!("{CSV_HEADER}\nhttp,src,1,2,3,ok,4,\nhttp,src,x,2,3,ok,4,\n");
    let e = parse_samples(p, &text).unwrap_err().to_string();
    assert_eq!(e, "/r/samples.csv:3: sendUs `x` is not a whole number");
    let text = format!("{CSV_HEADER}\nhttp,src,1,2,3,lost,4,\n");
    assert!(parse_samples(p, &text)
        .unwrap_err()
        .to_string()
        .contains("outcome `lost`"));
    let text = format!("{CSV_HEADER}\n\"http,src,1,2,3,ok,4,\n");
    assert!(parse_samples(p, &text)
        .unwrap_err()
        .to_string()
        .contains("not closed"));
}

#[test]
fn write_run_then_read_run_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = run_input(&combination("iptables", "udp"), 0, 7);
    input.samples.reverse();
    let record = write_run(dir.path(), input).unwrap();
    assert_eq!(read_run(dir.path()).unwrap(), record);
    assert_eq!(record.workloads[0].sent, 60);
    assert_eq!(record.workloads[0].failed.get("timeout"), Some(&10));
    assert_eq!(record.faults[0].recovery_ms, Some(1000.05));
    assert_eq!(record.faults[0].affected, vec!["http".to_string()]);
    let samples = read_samples(dir.path()).unwrap();
    assert_eq!(samples.len(), 120);
    assert!(
        samples.windows(2).all(|w| w[0].send_us <= w[1].send_us),
        "sorted"
    );
    let json = std::fs::read_to_string(dir.path().join("run.json")).unwrap();
    assert!(
        !json.contains("null"),
        "absent values are left out:\n{json}"
    );
    assert_eq!(assert_svgs_open(dir.path()), 2);
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&a, &b] {
        write_run(d.path(), run_input(&combination("iptables", "udp"), 0, 7)).unwrap();
    }
    for f in [
        "run.json",
        "samples.csv",
        "plots/http.svg",
        "plots/ping.svg",
    ] {
        let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(f)).unwrap();
        assert!(read(&a) == read(&b), "{f} differs");
    }
}

#[test]
fn reading_what_is_not_a_run_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = read_run(dir.path()).unwrap_err().to_string();
    assert!(e.contains("run.json"), "{e}");
    std::fs::write(
        dir.path().join("run.json"),
        r#"{"schema": "testbed.check/1"}"#,
    )
    .unwrap();
    let e = read_run(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("run.json: schema `testbed.check/1`, expected `testbed.run/1`"),
        "{e}"
    );
    std::fs::write(dir.path().join("run.json"), "{").unwrap();
    assert!(read_run(dir.path())
        .unwrap_err()
        .to_string()
        .contains("not a valid results file"));
}

/// An experiment of two combinations (one with a `/` in a value) and two
/// repetitions each, written like the runner writes it.
pub(crate) fn write_example(dir: &Path, seed: u64, interrupted: bool) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for c in [
        combination("iptables", "udp"),
        combination("userspace", "10.0.0.0/8"),
    ] {
        for rep in 0..2 {
            let run = dir.join(run_dir(&c.name, rep));
            std::fs::create_dir_all(&run).unwrap();
            let mut input = run_input(&c, rep, seed + u64::from(rep));
            if c.name.contains("userspace") {
                // Never recovers: fails to the end.
                input.samples.retain(|s| s.workload != "http");
                input.samples.extend(crate::results::testutil::series(
                    "http",
                    0,
                    6000,
                    (2000, 6000),
                ));
            }
            runs.push(write_run(&run, input).unwrap());
        }
    }
    write_experiment(dir, "failover", &runs, interrupted).unwrap();
    runs
}

#[test]
fn an_experiment_summary_pools_runs_and_reads_well() {
    let dir = tempfile::tempdir().unwrap();
    write_example(dir.path(), 7, false);
    let s = read_experiment(dir.path()).unwrap();
    assert_eq!(s.combinations.len(), 2);
    assert_eq!(s.workloads, vec!["http".to_string(), "ping".to_string()]);
    let c = &s.combinations[1];
    assert_eq!(c.dir, "proxy=userspace,overlay=10.0.0.0%2F8");
    assert_eq!(c.runs[1].dir, "proxy=userspace,overlay=10.0.0.0%2F8/rep-1");
    assert_eq!((c.workloads[0].sent, c.workloads[0].ok), (120, 40));
    assert!(c.workloads[0].latency_ms.is_some());
    assert_eq!(c.faults[0].runs.len(), 2);
    assert_eq!(c.faults[0].runs[0].recovery_ms, None);
    assert_eq!(
        s.combinations[0].faults[0].runs[1].recovery_ms,
        Some(1100.05)
    );
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    for want in [
        "# Experiment `failover`",
        "## Workload `http`",
        "| `http` | #1 proxy=iptables,overlay=udp | #2 proxy=userspace,overlay=10.0.0.0/8 |",
        "| sent | 120 | 120 |",
        "| success | 82.50% | 33.33% |",
        "| 1: kill pod shop/web-1 | 1000 ms, 1100 ms | never, never |",
        "![latency distribution per combination](plots/latency.svg)",
        "verified",
        "| 1 | proxy=iptables,overlay=udp | 1 | 8 | yes |",
    ] {
        assert!(md.contains(want), "summary.md lacks {want:?}:\n{md}");
    }
    assert!(!md.contains("Interrupted"));
    assert_eq!(assert_svgs_open(dir.path()), 3 + 4 * 2);
    let json = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(!json.contains("null"), "{json}");
}

#[test]
fn an_interrupted_experiment_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write_example(dir.path(), 7, true);
    assert!(read_experiment(dir.path()).unwrap().interrupted);
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("**Interrupted**"), "{md}");
}
