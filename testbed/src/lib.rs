//! testbed: a declarative network emulation testbed. One YAML file describes
//! a Kubernetes-style cluster (nodes, pods, hosts, services); this crate reads
//! it (`topology`), turns it into the complete desired state (`plan`) and
//! draws it (`graph`). Problems are reported with file, line, column and
//! field (`diag`).
//!
//! `unsafe` is denied here but in the modules that make the system calls
//! nix does not wrap safely (each says why): `signals`, `kernel::netns`,
//! `runtime::{child, exec, launch, supervise::process}`, `daemons`,
//! `state::pids`, `traffic::clock`.
#![deny(unsafe_code)]

/// Serialises a type through its `Display` and deserialises it through its
/// `FromStr`, so that values like `10ms` or `02:aa:..` appear as text.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    )*};
}

pub mod check;
pub mod cluster;
pub mod controller;
pub mod daemons;
pub mod diag;
pub mod events;
pub mod experiment;
pub mod graph;
pub mod kernel;
pub mod layout;
pub mod lifecycle;
pub mod overlay_run;
pub mod plan;
pub mod report;
pub mod results;
pub mod runner;
pub mod runtime;
pub mod services;
pub mod signals;
pub mod state;
pub mod topology;
pub mod traffic;
pub mod watchdog;

use diag::{Diagnostic, Diagnostics};
use plan::Plan;
use std::path::Path;

/// A topology file that planned cleanly.
#[derive(Debug)]
pub struct Loaded {
    /// The file's text.
    pub source: String,
    /// The typed topology.
    pub topology: topology::Topology,
    /// The plan.
    pub plan: Plan,
    /// Warnings (the file is still accepted).
    pub warnings: Vec<Diagnostic>,
}

/// Why a topology file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file has problems; every one found, in file order.
    #[error("{file} is not a valid topology")]
    Invalid {
        /// The file.
        file: String,
        /// Its text, for rendering the problems against.
        source_text: String,
        /// The problems.
        diagnostics: Vec<Diagnostic>,
    },
    /// A machine's share of a topology that has no such machine.
    #[error(transparent)]
    Share(#[from] plan::machines::ShareError),
}

impl LoadError {
    /// The problems rendered against the file, as the CLI prints them.
    pub fn render(&self) -> String {
        match self {
            LoadError::Read { .. } | LoadError::Share(_) => format!("error: {self}\n"),
            LoadError::Invalid {
                file,
                source_text,
                diagnostics,
            } => diag::render(file, source_text, diagnostics),
        }
    }
}

impl Loaded {
    /// The same topology, planned as machine `machine`'s share
    /// ([`plan::machines::restrict`]).
    pub fn for_machine(mut self, machine: &str) -> Result<Loaded, LoadError> {
        self.plan = plan::machines::restrict(&self.plan, machine)?;
        Ok(self)
    }

    /// Plans the topology again with another overlay backend, as if the file
    /// said `cluster.overlay: BACKEND` (for comparing backends on one file).
    pub fn with_overlay(mut self, backend: overlay::Backend) -> Result<Loaded, LoadError> {
        self.topology.cluster.overlay.value = backend;
        let mut diags = Diagnostics::default();
        match plan::build::build(&self.topology, &mut diags) {
            Some(plan) if !diags.has_errors() => {
                self.plan = match &self.plan.machine {
                    Some(m) => plan::machines::restrict(&plan, m)?,
                    None => plan,
                };
                Ok(self)
            }
            _ => Err(LoadError::Invalid {
                file: String::new(),
                source_text: self.source,
                diagnostics: diags.into_sorted(),
            }),
        }
    }
}

/// Reads, checks and plans the topology in `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: file.clone(),
        source,
    })?;
    load_str(&file, source)
}

/// Checks and plans a topology given as text; `file` names it in messages.
pub fn load_str(file: &str, source: String) -> Result<Loaded, LoadError> {
    let mut diags = Diagnostics::default();
    let topo = topology::read(&source, &mut diags);
    let plan = topo
        .as_ref()
        .and_then(|t| plan::build::build(t, &mut diags));
    match (topo, plan) {
        (Some(topology), Some(plan)) if !diags.has_errors() => Ok(Loaded {
            source,
            topology,
            plan,
            warnings: diags.into_sorted(),
        }),
        _ => Err(LoadError::Invalid {
            file: file.to_string(),
            source_text: source,
            diagnostics: diags.into_sorted(),
        }),
    }
}
