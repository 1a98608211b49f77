//! TEMPORARY: the results API the helper provides (removed at merge).
#![allow(missing_docs, dead_code)]
use super::*;
use std::path::Path;

pub struct RunInput {
    pub experiment: String,
    pub combination: crate::experiment::schedule::Combination,
    pub rep: u32,
    pub seed: u64,
    pub meta: Meta,
    pub workloads: Vec<crate::experiment::Workload>,
    pub samples: Vec<crate::traffic::Sample>,
    pub faults: Vec<FaultInput>,
    pub checks: Vec<CheckRecord>,
    pub execs: Vec<ExecRecord>,
    pub seeded: Seeded,
    pub verified: Verified,
    pub interrupted: bool,
}
pub struct FaultInput {
    pub at_ms: f64,
    pub until_ms: Option<f64>,
    pub spec: String,
    pub error: Option<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("results")]
pub struct ResultsError;
pub struct Summary;
pub fn write_run(_dir: &Path, _input: RunInput) -> Result<RunRecord, ResultsError> {
    Err(ResultsError)
}
pub fn write_experiment(
    _dir: &Path,
    _experiment: &str,
    _runs: &[RunRecord],
    _interrupted: bool,
) -> Result<Summary, ResultsError> {
    Err(ResultsError)
}
pub fn seeded(_plan: &crate::plan::types::Plan, _run: &crate::experiment::schedule::Run) -> Seeded {
    unimplemented!()
}
pub fn run_id(_t: std::time::SystemTime) -> String {
    String::new()
}
pub fn combination_dir(name: &str) -> String {
    name.to_string()
}
