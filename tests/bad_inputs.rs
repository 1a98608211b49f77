//! The table of bad inputs: every file in `tests/bad/` is rejected, every
//! problem names a line and a field, the field named in the file's
//! `# expect:` header is among them, and the rendered message matches its
//! reviewed snapshot.

use std::path::{Path, PathBuf};
use testbed::LoadError;

fn bad_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "the bad-input table must hold at least 25 files"
    );
    files
}

/// The field paths the `# expect: PATH[, PATH...] what` header names.
fn expected_paths(source: &str) -> Vec<String> {
    let Some(line) = source.lines().find(|l| l.starts_with("# expect:")) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for word in line.trim_start_matches("# expect:").split_whitespace() {
        let path = word.trim_end_matches([',', ':']);
        let is_path = path.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "[]._".contains(c));
        if !is_path {
            break;
        }
        paths.push(path.to_string());
        if !word.ends_with(',') {
            break;
        }
    }
    paths
}

#[test]
fn every_bad_input_is_rejected_with_line_and_field() {
    let mut misses = Vec::new();
    for file in bad_files() {
        let name = format!(
            "tests/bad/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let source = std::fs::read_to_string(&file).expect("readable");
        let err = match testbed::load_str(&name, source.clone()) {
            Ok(_) => panic!("{name} was accepted, but it is in the bad-input table"),
            Err(e) => e,
        };
        let LoadError::Invalid { diagnostics, .. } = &err else {
            panic!("{name}: unexpected error {err}");
        };
        let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(!errors.is_empty(), "{name}: rejected without an error");
        for d in &errors {
            assert!(
                d.pos.line >= 1 && d.pos.col >= 1,
                "{name}: no position in {d:?}"
            );
            assert!(d.help.is_some(), "{name}: no advice in {d:?}");
            let syntax =
                d.message.starts_with("YAML syntax error") || d.message.contains("YAML document");
            assert!(
                syntax || !d.path.is_empty(),
                "{name}: no field path in {d:?}"
            );
        }
        let syntax_only = errors
            .iter()
            .all(|d| d.message.starts_with("YAML syntax error"));
        for path in expected_paths(&source).into_iter().filter(|_| !syntax_only) {
            if !errors
                .iter()
                .any(|d| d.path == path || d.path.starts_with(&format!("{path}.")))
            {
                misses.push(format!(
                    "{name}: expected an error at `{path}`, got:\n{}",
                    err.render()
                ));
            }
        }
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        insta::assert_snapshot!(format!("bad-{stem}"), err.render());
    }
    assert!(misses.is_empty(), "{}", misses.join("\n"));
}
