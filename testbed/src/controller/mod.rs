//! The controller: one reconcile loop per running testbed (inside the
//! supervisor process) that keeps the cluster in its desired state. The
//! desired state is the file as last applied plus the live changes made
//! since (`live`: replica counts, deleted pods, evictions, faults); from
//! both, `desired` computes the plan, pure and deterministic. The loop
//! compares it with what it observes (processes, readiness, kernel objects)
//! and acts on the difference; every action and observation is an event
//! (`events`). `change` says how two plans differ, for `testbed apply`.

pub mod change;
pub mod control;
mod converge;
pub mod desired;
mod drift;
/// The event log is a module of its own, below the controller and the
/// endpoint follower that both write it; its old path stays.
pub use crate::events;
pub mod faults;
mod handle;
pub mod live;
pub mod lookup;
pub mod machines;
pub mod remote;
pub mod run;
pub mod spec;
pub mod verify;
