//! The command line as a user meets it: exit codes (0 ok, 2 bad input),
//! byte-identical plans, JSON output, and drawings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the testbed binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_every_example() {
    for entry in std::fs::read_dir(root().join("topologies")).expect("topologies/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = testbed(&["validate", &path.display().to_string()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(": ok: testbed `"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn bad_input_exits_2_and_names_file_line_and_field() {
    let out = testbed(&["validate", "tests/bad/54-targetport-too-large.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--> tests/bad/54-targetport-too-large.yaml:10:21"),
        "{err}"
    );
    assert!(err.contains("services[0].ports[0].targetPort"), "{err}");
    assert!(
        err.contains("help: a port is a number from 1 to 65535"),
        "{err}"
    );
    // plan and graph refuse the same file the same way, printing nothing.
    for cmd in ["plan", "graph"] {
        let out = testbed(&[cmd, "tests/bad/54-targetport-too-large.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(
            out.stdout.is_empty(),
            "{cmd} printed a result for a bad file"
        );
    }
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let out = testbed(&["plan", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read no/such/file.yaml"),
        "{}",
        text(&out.stderr)
    );
    let out = testbed(&["plan"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    let out = testbed(&["plan", "topologies/web.yaml", "--format", "toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_json_lists_every_problem() {
    let out = testbed(&["validate", "--json", "tests/bad/84-several-errors.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    let diags = v["diagnostics"].as_array().expect("a list");
    let paths: Vec<&str> = diags
        .iter()
        .filter(|d| d["severity"] == "error")
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "nodes[0].link.delay",
            "pods[0].node",
            "services[0].ports[0].port"
        ]
    );
    assert!(diags
        .iter()
        .all(|d| d["line"].as_u64().is_some_and(|l| l > 0)));

    let out = testbed(&["validate", "--json", "topologies/minimal.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], true);
}

#[test]
fn plan_prints_the_same_bytes_twice_in_both_formats() {
    for args in [
        &["plan", "topologies/large.yaml"][..],
        &["plan", "topologies/large.yaml", "--format", "json"],
        &["plan", "topologies/nodeport-lb.yaml", "--json"],
    ] {
        let a = testbed(args);
        let b = testbed(args);
        assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
        assert!(!a.stdout.is_empty());
        assert_eq!(a.stdout, b.stdout, "{args:?}");
    }
    let json = testbed(&["plan", "topologies/web.yaml", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["name"], "webdemo");
}

#[test]
fn graph_formats() {
    let svg = text(&testbed(&["graph", "topologies/web.yaml"]).stdout);
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    let dot = text(&testbed(&["graph", "topologies/web.yaml", "--format", "dot"]).stdout);
    assert!(dot.starts_with("graph \"webdemo\" {"), "{dot}");
    let mermaid = text(&testbed(&["graph", "topologies/web.yaml", "--format", "mermaid"]).stdout);
    assert!(mermaid.starts_with("flowchart TB"), "{mermaid}");
}

#[test]
fn help_is_available_everywhere() {
    for cmd in [
        &["--help"][..],
        &["validate", "--help"],
        &["plan", "--help"],
        &["graph", "--help"],
    ] {
        let out = testbed(cmd);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{cmd:?}");
    }
}

#[test]
fn rules_prints_what_each_mode_loads() {
    let ipt = text(&testbed(&["rules", "topologies/web.yaml"]).stdout);
    assert!(
        ipt.starts_with("*nat\n") && ipt.contains("-A PREROUTING -j TB-SERVICES"),
        "{ipt}"
    );
    // One pod leaving rewrites only its service's chains, no hooks.
    let update = text(&testbed(&["rules", "topologies/web.yaml", "--without", "web-0"]).stdout);
    assert!(
        update.contains("-X TB-SEP-")
            && !update.contains("PREROUTING")
            && !update.contains("-A TB-SERVICES"),
        "{update}"
    );
    let nft = text(&testbed(&["rules", "topologies/web.yaml", "--mode", "nftables"]).stdout);
    assert!(
        nft.contains("table ip testbed {") && nft.contains("numgen random mod 2"),
        "{nft}"
    );
    let portals = text(&testbed(&["rules", "topologies/web.yaml", "--mode", "userspace"]).stdout);
    assert!(
        portals.contains("-j REDIRECT --to-ports 20000"),
        "{portals}"
    );
    // A pod the file does not have is a usage error naming it.
    let out = testbed(&["rules", "topologies/web.yaml", "--without", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no pod named `nope`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn impair_without_a_change_or_with_clear_and_flags_is_refused() {
    // Refused before any testbed is looked at: nothing is cleared by accident.
    for args in [
        vec!["impair", "nosuchbed", "node1"],
        vec!["impair", "nosuchbed", "node1", "--clear", "--delay", "1ms"],
        vec!["impair", "nosuchbed", "node1", "--delay", "1 parsec"],
    ] {
        let out = testbed(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(text(&out.stderr).starts_with("error: "), "{out:?}");
    }
}

#[test]
fn completions_and_the_manual_page_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = testbed(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        for sub in ["up", "down", "check", "run", "results"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = testbed(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad usage");
    let man = testbed(&["man"]);
    assert!(man.status.success());
    let page = text(&man.stdout);
    assert!(
        page.contains(".TH testbed 1") && page.contains("testbed\\-check"),
        "{}",
        &page[..400.min(page.len())]
    );
}

#[test]
fn log_output_follows_quiet_verbose_and_rust_log_without_colour_off_a_terminal() {
    let file = root().join("topologies/web.yaml");
    let file = file.to_str().expect("utf-8");
    let run = |args: &[&str], rust_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_testbed"));
        c.args(args).env_remove("RUST_LOG").env_remove("NO_COLOR");
        if let Some(spec) = rust_log {
            c.env("RUST_LOG", spec);
        }
        c.output().expect("runs")
    };
    let debug = run(&["-v", "validate", file], None);
    let log = text(&debug.stderr);
    assert!(log.contains("DEBUG"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour off a terminal: {log:?}");
    assert!(!text(&run(&["validate", file], None).stderr).contains("DEBUG"));
    assert!(text(&run(&["validate", file], Some("debug")).stderr).contains("DEBUG"));
    assert!(!text(&run(&["-v", "validate", file], Some("error")).stderr).contains("DEBUG"));
    assert_eq!(
        run(&["-q", "-v", "validate", file], None).status.code(),
        Some(2)
    );
    let quiet = run(&["-q", "validate", file], None);
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "{quiet:?}"
    );
}

/// `up` of a topology spread over machines without `--machine`, with a
/// `--machine` it does not have, or `--machine` on a one-machine topology
/// is refused before anything is made (exit 2), saying how to bring a
/// share up or naming the machine. Nothing of the testbed appears under
/// /run/netns. (Building shares: `tests/e2e_machines.rs`.)
#[test]
fn up_of_a_multi_machine_topology_is_refused_before_anything_is_made() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["up", "topologies/two-machines.yaml"],
            "is spread over the machines alpha, beta: run `testbed up FILE --machine NAME`",
        ),
        (
            &["up", "topologies/two-machines.yaml", "--machine", "alhpa"],
            "has no machine named `alhpa`; did you mean `alpha`?",
        ),
        (
            &["up", "topologies/minimal.yaml", "--machine", "alpha"],
            "runs on one machine: its topology has no `machines:`; leave out --machine",
        ),
    ];
    for (args, says) in cases {
        let out = testbed(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let made = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("tb-two-machines.")
        });
    assert!(!made, "a namespace of the refused testbed exists");
}
