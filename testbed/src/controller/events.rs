//! Events: every action the controller takes and every observation it
//! makes, with a timestamp, a kind, the object and a reason, appended to
//! `events.jsonl` in the testbed's state directory and readable after the
//! fact (`testbed events`).

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A pod's namespace and interfaces were made.
    PodCreated,
    /// A pod's containers were started.
    PodStarted,
    /// Every container of a pod is ready.
    PodReady,
    /// A container was started again after it ended.
    PodRestarted,
    /// A pod was removed from a node that is not ready.
    PodEvicted,
    /// A pod was removed (deleted, scaled away, applied away).
    PodDeleted,
    /// A node stopped being ready.
    NodeNotReady,
    /// A node is ready again.
    NodeReady,
    /// A pod's endpoints joined the services.
    EndpointAdded,
    /// A pod's endpoints left the services.
    EndpointRemoved,
    /// A kernel object changed behind the testbed's back was restored.
    DriftRepaired,
    /// A difference from the plan was seen.
    DriftDetected,
    /// A fault was injected.
    FaultInjected,
    /// A fault was undone.
    FaultCleared,
    /// One step of `testbed apply` or `testbed scale`.
    ApplyStep,
    /// The controller started or stopped.
    Controller,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// What it happened to: `pod default/web-0`, `node node1`,
    /// `service default/web`, `fault link-down pod web-0`, `testbed`.
    pub object: String,
    /// Why, in a few words.
    pub reason: String,
}
// STUB
pub const EVENTS_FILE: &str = "events.jsonl";
pub struct EventLog;
impl EventLog {
    pub fn open(_d: &std::path::Path) -> std::io::Result<EventLog> { Ok(EventLog) }
    pub fn record(&mut self, _k: EventKind, _o: impl Into<String>, _r: impl Into<String>) {}
}
pub fn read(_d: &std::path::Path) -> std::io::Result<Vec<Event>> { Ok(vec![]) }
pub fn render(_e: &[Event]) -> String { String::new() }
pub struct Follower;
impl Follower { pub fn after(_d: &std::path::Path, _n: usize) -> Follower { Follower } pub fn poll(&mut self) -> Vec<Event> { vec![] } }
pub fn format_time(_ms: u64) -> String { String::new() }
