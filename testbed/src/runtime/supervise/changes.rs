//! Changing what the supervisor runs while it runs: a new plan (pods added,
//! removed or changed), pods held stopped (their node is down), pods
//! stopped for good before their namespaces go, and a container killed on
//! purpose.

use super::{sandboxes, Slot, Supervisor};
use crate::plan::Plan;
use crate::runtime::procs::{reap_one, signal_group};
use crate::runtime::status::{Exit, State};
use nix::sys::signal::Signal;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tracing::info;

/// How long a container stopped for good gets to end after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Runs `plan` from now on: containers whose pod or host is unchanged
    /// keep running untouched; those of pods that are gone or changed are
    /// killed and reaped; new ones start at the next tick (unless held).
    /// Returns the keys (`NAMESPACE/NAME`, `host:NAME`) of the sandboxes
    /// started anew.
    pub fn set_plan(&mut self, plan: &Plan) -> BTreeSet<String> {
        self.log_max = plan.cluster.container_log_max_bytes;
        let wanted = sandboxes(plan);
        let by_key: HashMap<String, usize> = wanted
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key(), i))
            .collect();
        let unchanged = |slot: &Slot| {
            by_key
                .get(&slot.sandbox.key())
                .is_some_and(|&i| *wanted[i] == *slot.sandbox)
        };
        let gone: BTreeSet<String> = self
            .slots
            .iter()
            .filter(|s| !unchanged(s))
            .map(|s| s.sandbox.key())
            .collect();
        self.stop_pods(&gone);
        let kept: BTreeSet<String> = self.slots.iter().map(|s| s.sandbox.key()).collect();
        let now = Instant::now();
        let mut started = BTreeSet::new();
        for sb in wanted {
            if kept.contains(&sb.key()) {
                continue;
            }
            started.insert(sb.key());
            for i in 0..sb.containers.len() {
                self.slots.push(Slot::new(sb.clone(), i, now));
            }
        }
        // Keep the plan's order (pods, then hosts) in the status.
        let order: HashMap<String, usize> = by_key;
        self.slots
            .sort_by_key(|s| (order.get(&s.sandbox.key()).copied(), s.index));
        self.dirty = true;
        started
    }

    /// Kills the containers of the sandboxes `keys` and forgets them (their
    /// pod is being removed or made again): on return no process of theirs
    /// runs, so their namespaces can go.
    pub fn stop_pods(&mut self, keys: &BTreeSet<String>) {
        if keys.is_empty() {
            return;
        }
        let stopping: Vec<usize> = (0..self.slots.len())
            .filter(|&i| keys.contains(&self.slots[i].sandbox.key()))
            .collect();
        for &i in &stopping {
            let slot = &mut self.slots[i];
            slot.next_start = None;
            slot.cancel_probe();
            if let Some(pid) = slot.pid {
                signal_group(pid, Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        for &i in &stopping {
            let slot = &mut self.slots[i];
            let Some(pid) = slot.pid.take() else { continue };
            if slot.adopted {
                let start = slot.start_time.unwrap_or(0);
                while super::same_process(pid.as_raw(), start) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            } else {
                let _ = reap_one(pid, true);
            }
        }
        self.slots.retain(|s| !keys.contains(&s.sandbox.key()));
        self.dirty = true;
    }

    /// Holds the sandboxes `keys` stopped, saying `why` (their node is
    /// down): their running containers are killed and none is started
    /// until they are released. Sandboxes held before and not in `keys`
    /// are released and start again at once.
    pub fn hold(&mut self, keys: &BTreeSet<String>, why: &str) {
        let now = Instant::now();
        for slot in &mut self.slots {
            let key = slot.sandbox.key();
            match (keys.contains(&key), slot.held.is_some()) {
                (true, false) => {
                    slot.held = Some(why.to_string());
                    slot.next_start = None;
                    slot.cancel_probe();
                    match slot.pid {
                        Some(pid) => signal_group(pid, Signal::SIGKILL),
                        None => {
                            slot.state = State::Waiting;
                            slot.error = Some(why.to_string());
                        }
                    }
                    self.dirty = true;
                }
                (false, true) => {
                    slot.held = None;
                    slot.error = None;
                    slot.backoff.succeeded();
                    if slot.pid.is_none() {
                        slot.next_start = Some(now);
                    }
                    self.dirty = true;
                }
                _ => {}
            }
        }
        // A held adopted container is not a child: notice its end now.
        self.reap();
    }

    /// Sends SIGKILL to the running containers of sandbox `key` (all, or
    /// the one named `container`); their restart policy decides what
    /// follows. Returns the containers killed.
    pub fn kill(&mut self, key: &str, container: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for slot in &self.slots {
            if slot.sandbox.key() != key || container.is_some_and(|c| c != slot.container().name) {
                continue;
            }
            if let Some(pid) = slot.pid {
                info!("{}: SIGKILL on request", slot.who());
                signal_group(pid, Signal::SIGKILL);
                out.push(slot.container().name.clone());
            }
        }
        out
    }

    /// The sandboxes whose containers are all running and ready (or ran to
    /// completion), by key.
    pub fn ready_sandboxes(&self) -> BTreeSet<String> {
        let mut not: BTreeSet<String> = BTreeSet::new();
        let mut all: BTreeSet<String> = BTreeSet::new();
        for s in &self.slots {
            let key = s.sandbox.key();
            let fine = match s.state {
                State::Running => s.ready,
                State::Exited => s.last_exit.is_some_and(Exit::success),
                State::Waiting | State::Failed => false,
            };
            if !fine {
                not.insert(key.clone());
            }
            all.insert(key);
        }
        all.difference(&not).cloned().collect()
    }
}
