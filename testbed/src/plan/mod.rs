//! The plan: the desired state computed from a topology (`build`), its shape
//! (`types`), kernel object names and MACs (`names`), hosts files
//! (`hosts`), its YAML or JSON text (`render`), which real machine runs
//! what (`machines`), and the LAN spanning machines (`span`).

pub mod build;
pub mod hosts;
pub mod machines;
pub mod names;
pub mod render;
pub mod span;
pub mod state;
pub mod types;

pub use types::Plan;

/// Planning topologies given as text, for unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::Plan;

    /// Loads `yaml`, which must plan (warnings allowed).
    pub(crate) fn load(yaml: &str) -> crate::Loaded {
        match crate::load_str("t.yaml", yaml.to_string()) {
            Ok(l) => l,
            Err(e) => panic!("{}", e.render()),
        }
    }

    /// The plan of `yaml`, which must plan.
    pub(crate) fn plan(yaml: &str) -> Plan {
        load(yaml).plan
    }
}
