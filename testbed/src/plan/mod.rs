//! The plan: the desired state computed from a topology (`build`), its shape
//! (`types`), kernel object names and MACs (`names`), hosts files
//! (`hosts`), and its YAML or JSON text (`render`).

pub mod build;
pub mod hosts;
pub mod names;
pub mod render;
pub mod state;
pub mod types;

pub use types::Plan;
