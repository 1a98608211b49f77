//! The file a running testbed was last given (`up`, `apply`), kept in its
//! state directory as `spec.json` with what the command line changed
//! (`up --overlay`), so that the controller can plan it again with the live
//! changes laid over it.

use crate::state::files::{FileError, JsonFile};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file in the state directory.
pub use crate::state::layout::SPEC_FILE;

/// A topology file as given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Where it was read from (for messages).
    pub file: String,
    /// Its text.
    pub source: String,
    /// The overlay the command line chose instead of the file's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlay: Option<overlay::Backend>,
    /// The machine whose share this is (`up --machine`), for a testbed
    /// spread over several.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine: Option<String>,
}

impl Spec {
    /// Checks and plans it, as `up` did.
    pub fn load(&self) -> Result<crate::Loaded, crate::LoadError> {
        let mut loaded = crate::load_str(&self.file, self.source.clone())?;
        if let Some(m) = &self.machine {
            loaded = loaded.for_machine(m)?;
        }
        match self.overlay {
            Some(b) => loaded.with_overlay(b),
            None => Ok(loaded),
        }
    }
}

impl Spec {
    /// Checks and plans it as the whole testbed, every machine's share
    /// together (the same as [`Spec::load`] on one machine).
    pub fn load_whole(&self) -> Result<crate::Loaded, crate::LoadError> {
        Spec {
            machine: None,
            ..self.clone()
        }
        .load()
    }
}

/// The spec's file of the testbed whose state directory is `dir`.
pub fn file(dir: &Path) -> JsonFile<Spec> {
    JsonFile::new(dir.join(SPEC_FILE), "spec", true)
}

/// Reads the spec of the testbed whose state directory is `dir`.
pub fn read(dir: &Path) -> Result<Spec, FileError> {
    file(dir).read()
}

/// Writes `spec` atomically.
pub fn write(dir: &Path, spec: &Spec) -> Result<(), FileError> {
    file(dir).write(spec)
}
