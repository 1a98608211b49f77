//! The topology file: reading it (`yaml`), typing it (`decode`, `model`,
//! `units`), checking what refers to what (`check`; the multi-machine fields
//! in `machines`) and writing a tree back as text (`emit`).

pub mod check;
pub mod checks;
pub mod decode;
pub mod emit;
pub mod machines;
pub mod model;
pub mod names;
pub mod units;
pub mod yaml;

pub use model::Topology;

use crate::diag::Diagnostics;

/// Reads and checks a topology from its text. Problems go to `diags`; the
/// topology is `None` only when the text is not YAML at all, otherwise a
/// best-effort model (broken entries left out) so that later stages can
/// report their problems in the same run.
pub fn read(source: &str, diags: &mut Diagnostics) -> Option<Topology> {
    match yaml::parse(source) {
        Ok(root) => {
            let topo = decode::decode(&root, diags);
            check::check(&topo, diags);
            Some(topo)
        }
        Err(errors) => {
            for e in errors {
                diags.push(e);
            }
            None
        }
    }
}
