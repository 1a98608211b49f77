//! Whether a running testbed's kernel objects are its desired state: the
//! plan with the faults in force (a link a fault holds down is meant to be
//! down), read back from every namespace of the testbed. `testbed verify`
//! prints it; an experiment records it after each run's faults are undone.

use crate::kernel::observe::ObserveError;
use crate::plan::state::{diff, KernelState};
use crate::plan::Plan;
use crate::state::TestbedName;
use std::path::Path;

/// The kernel state `plan` describes with the faults of its testbed.
pub fn wanted(plan: &Plan) -> KernelState {
    let faults = super::live::read(Path::new(&plan.state_dir))
        .map(|l| l.faults)
        .unwrap_or_default();
    super::faults::kernel_state(plan, &faults)
}

/// Reads the kernel state of the namespaces `want` names and of every
/// other namespace of the testbed.
pub fn observe(plan: &Plan, want: &KernelState) -> Result<KernelState, ObserveError> {
    let mut names: Vec<String> = want.keys().cloned().collect();
    if let Ok(name) = TestbedName::new(&plan.name) {
        names.extend(crate::kernel::teardown::namespaces_of(&name));
    }
    names.sort();
    names.dedup();
    crate::kernel::observe::observe(&names, &["net.ipv4.ip_forward"])
}

/// Every difference between the desired and the observed state, and how
/// many namespaces were read.
pub fn differences(plan: &Plan) -> Result<(Vec<String>, usize), ObserveError> {
    let want = wanted(plan);
    let have = observe(plan, &want)?;
    Ok((diff(&want, &have), have.len()))
}
