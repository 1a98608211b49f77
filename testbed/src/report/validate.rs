//! `testbed validate`: whether a topology file is valid, every problem in it
//! (file, line, column, field path, severity, message, help) and, when it
//! is valid, what it describes.

use crate::diag::{Diagnostic, Severity};
use crate::plan::Plan;
use serde::Serialize;
use std::fmt;

/// The outcome of checking one file.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    /// The file, as named on the command line.
    pub file: String,
    /// Whether it is accepted (warnings do not make it invalid).
    pub valid: bool,
    /// How many errors it has.
    pub errors: usize,
    /// How many warnings it has.
    pub warnings: usize,
    /// What it describes (valid files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub testbed: Option<Described>,
    /// Every problem, in file order.
    pub diagnostics: Vec<Problem>,
}

/// What a valid file describes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Described {
    /// The testbed's name.
    pub name: String,
    /// How many nodes it has.
    pub nodes: usize,
    /// How many hosts.
    pub hosts: usize,
    /// How many pods, controller pods included.
    pub pods: usize,
    /// How many services.
    pub services: usize,
}

/// One problem in the file.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The file.
    pub file: String,
    /// The line of the offending text, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Its column, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The field path, e.g. `pods[2].containers[0].command` (absent for
    /// YAML syntax errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// The validation of `file`: `plan` when it planned cleanly, and its
/// problems (the warnings of a valid file, or the errors and warnings of an
/// invalid one).
pub fn validation(file: &str, plan: Option<&Plan>, diagnostics: &[Diagnostic]) -> Validation {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let nonzero = |n: usize| (n > 0).then_some(n);
    Validation {
        file: file.to_string(),
        valid: plan.is_some() && errors == 0,
        errors,
        warnings: diagnostics.len() - errors,
        testbed: plan.map(|p| Described {
            name: p.name.clone(),
            nodes: p.nodes.len(),
            hosts: p.hosts.len(),
            pods: p.pods.len(),
            services: p.services.len(),
        }),
        diagnostics: diagnostics
            .iter()
            .map(|d| Problem {
                file: file.to_string(),
                line: nonzero(d.pos.line),
                column: nonzero(d.pos.col),
                path: (!d.path.is_empty()).then(|| d.path.clone()),
                severity: d.severity,
                message: d.message.clone(),
                help: d.help.clone(),
            })
            .collect(),
    }
}

/// The line a valid file gets: `FILE: ok: testbed `x` with 2 nodes, ...`.
impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.testbed {
            Some(t) => writeln!(
                f,
                "{}: ok: testbed `{}` with {} nodes, {} hosts, {} pods and {} services",
                self.file, t.name, t.nodes, t.hosts, t.pods, t.services
            ),
            None => writeln!(
                f,
                "{}: {} errors, {} warnings",
                self.file, self.errors, self.warnings
            ),
        }
    }
}
