//! User-facing problems found in a topology file: each names the file, the
//! line and column, the field path, what is wrong and how to fix it.

use serde::Serialize;
use std::fmt::Write as _;

/// A position in the topology file (1-based line and column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Pos {
    /// The line, counting from 1.
    pub line: usize,
    /// The column, counting from 1.
    pub col: usize,
    /// How many characters the offending text spans on that line (at least 1).
    #[serde(skip)]
    pub len: usize,
}

/// Where a value came from: its position and its field path
/// (`services[1].ports[0].targetPort`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct At {
    /// The position of the value.
    pub pos: Pos,
    /// The field path of the value.
    pub path: String,
}

impl At {
    /// A location.
    pub fn new(pos: Pos, path: impl Into<String>) -> At {
        At {
            pos,
            path: path.into(),
        }
    }
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is rejected.
    Error,
    /// The file is accepted, but probably not what was meant.
    Warning,
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Line and column of the offending text.
    #[serde(flatten)]
    pub pos: Pos,
    /// The field path, e.g. `pods[2].containers[0].command`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `at`.
    pub fn error(at: &At, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            pos: at.pos,
            path: at.path.clone(),
            message: message.into(),
            help: None,
        }
    }

    /// A warning at `at`.
    pub fn warning(at: &At, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(at, message)
        }
    }

    /// The same problem with advice on fixing it.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Whether this problem rejects the file.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Collects problems while a file is read, planned or checked.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Whether any error (not warning) was found.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The problems, in file order (line, then column), errors before
    /// warnings at the same place.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by_key(|d| (d.pos.line, d.pos.col, d.severity != Severity::Error));
        self.items.dedup();
        self.items
    }
}

/// Renders problems against their source, compiler style:
///
/// ```text
/// error: port 70000 is out of range
///   --> web.yaml:14:21
///    |
/// 14 |         targetPort: 70000
///    |                     ^^^^^ services[0].ports[0].targetPort
///    = help: a port is a number from 1 to 65535
/// ```
pub fn render(file: &str, source: &str, diags: &[Diagnostic]) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for d in diags {
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{kind}: {}", d.message);
        let _ = writeln!(out, "  --> {file}:{}:{}", d.pos.line, d.pos.col);
        let gutter = d.pos.line.to_string().len().max(2);
        let pad = " ".repeat(gutter);
        if let Some(text) = d.pos.line.checked_sub(1).and_then(|i| lines.get(i)) {
            let text = text.trim_end();
            let col = d.pos.col.max(1);
            let width = text.chars().count().saturating_sub(col - 1).max(1);
            let carets = "^".repeat(d.pos.len.clamp(1, width));
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{:>gutter$} | {text}", d.pos.line);
            let _ = write!(out, "{pad} | {}{carets}", " ".repeat(col - 1));
            if !d.path.is_empty() {
                let _ = write!(out, " {}", d.path);
            }
            out.push('\n');
        } else if !d.path.is_empty() {
            let _ = writeln!(out, "{pad} = field: {}", d.path);
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    match (errors, warnings) {
        (0, 0) => {}
        (e, w) => {
            let _ = writeln!(
                out,
                "{file}: {e} error{}, {w} warning{}",
                if e == 1 { "" } else { "s" },
                if w == 1 { "" } else { "s" }
            );
        }
    }
    out
}

/// Suggests the candidate closest to `word`, if one is close enough to be a
/// likely typo (edit distance at most a third of the word, and at most 3).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= (word.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of
/// neighbours (optimal string alignment), so `vxaln` is one edit from `vxlan`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("targetport", &["port", "targetPort"]),
            Some("targetPort")
        );
        assert_eq!(did_you_mean("node", &["nodes", "pods"]), Some("nodes"));
        assert_eq!(
            did_you_mean("vxaln", &["udp", "vxlan", "host-gw"]),
            Some("vxlan")
        );
        assert_eq!(did_you_mean("zzzzzz", &["nodes", "pods"]), None);
    }

    #[test]
    fn renders_snippet() {
        let src = "a: 1\nports:\n  targetPort: 70000\n";
        let d = Diagnostic::error(
            &At::new(
                Pos {
                    line: 3,
                    col: 15,
                    len: 5,
                },
                "ports.targetPort",
            ),
            "port 70000 is out of range",
        )
        .help("a port is a number from 1 to 65535");
        let out = render("f.yaml", src, &[d]);
        assert!(out.contains(" 3 |   targetPort: 70000\n"), "{out}");
        assert!(
            out.contains("   |               ^^^^^ ports.targetPort\n"),
            "{out}"
        );
        assert!(out.contains("f.yaml: 1 error, 0 warnings"), "{out}");
    }
}
