//! Drift repair: kernel objects of the testbed changed or deleted behind its
//! back (a pod's route, a veth, an address, an MTU, a bridge port, a link
//! state) are put back as the desired state says, unless a fault explains
//! the difference (a fault's link is *meant* to be down).
//!
//! A thread of its own holds a [`Watcher`] with one notification socket in
//! every namespace of the testbed, and reports the namespaces that changed;
//! idle, it sleeps in `poll(2)`. The controller's loop takes those names,
//! reads just those namespaces back, computes the fixes (a pure function,
//! `kernel::repair::repairs`) and makes them, recording each as an event.
//! Names are keys of `kernel::watch` (`links:NETNS` for a namespace without
//! permanent neighbours); [`netns_of`] gives the namespace back.
//! Nodes' service rules are watched too (nf_tables notifications); a change
//! there goes to the endpoint follower, which owns those rules.
//! The namespaces to watch follow the plan; a namespace made again (a pod
//! made anew) is watched anew, since the old socket would keep watching the
//! old one.

use crate::kernel::watch::{Waker, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::warn;

/// What `plan` has watched: every namespace's links, addresses, routes and
/// neighbours, and every node's firewall rules (`rules:NETNS`).
pub fn watched(plan: &crate::plan::Plan) -> Vec<String> {
    use crate::kernel::watch::LINKS;
    // Only namespaces with permanent neighbours (vxlan's nodes) hear of
    // neighbours: elsewhere the ARP cache would only wake the watcher.
    let with_neighbours: BTreeSet<&str> = plan
        .nodes
        .iter()
        .filter(|n| !n.neighbours.is_empty())
        .map(|n| n.netns.as_str())
        .collect();
    let mut names: Vec<String> = crate::kernel::apply::namespaces(plan)
        .into_iter()
        .map(|n| {
            if with_neighbours.contains(n.as_str()) {
                n
            } else {
                format!("{LINKS}{n}")
            }
        })
        .collect();
    names.extend(
        plan.nodes
            .iter()
            .map(|n| format!("{}{}", crate::kernel::watch::RULES, n.netns)),
    );
    names
}

/// The namespace a watched name stands for (`rules:` names are not one).
pub fn netns_of(name: &str) -> Option<&str> {
    use crate::kernel::watch::{LINKS, RULES};
    if name.starts_with(RULES) {
        return None;
    }
    Some(name.strip_prefix(LINKS).unwrap_or(name))
}

/// What the controller and the watching thread share.
#[derive(Default)]
struct Shared {
    /// The namespaces to watch, each with a generation: a new generation
    /// means the namespace was made again.
    wanted: BTreeMap<String, u64>,
    /// The namespaces that changed since the controller last looked.
    dirty: BTreeSet<String>,
    /// Set when the controller ends.
    stop: bool,
}

/// The controller's handle on the watching thread.
pub struct Drift {
    shared: Arc<Mutex<Shared>>,
    waker: Option<Waker>,
    generation: u64,
}

impl Drift {
    /// Starts watching the namespaces `names`. If watching cannot start, drift
    /// is not repaired (said in the log), and the rest goes on.
    pub fn start(names: impl IntoIterator<Item = String>) -> Drift {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut drift = Drift {
            shared: shared.clone(),
            waker: None,
            generation: 0,
        };
        drift.want(names, &BTreeSet::new());
        match Watcher::new() {
            Ok(w) => {
                drift.waker = Some(w.waker());
                std::thread::spawn(move || watch(w, &shared));
            }
            Err(e) => warn!("drift is not repaired: cannot watch the namespaces: {e}"),
        }
        drift
    }

    /// Watches exactly `names` from now on; those in `remade` are watched
    /// anew (their namespaces were made again).
    pub fn want(&mut self, names: impl IntoIterator<Item = String>, remade: &BTreeSet<String>) {
        self.generation += 1;
        let generation = self.generation;
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::take(&mut s.wanted);
        s.wanted = names
            .into_iter()
            .map(|n| {
                let g = match old.get(&n) {
                    Some(&g) if !netns_of(&n).is_some_and(|ns| remade.contains(ns)) => g,
                    _ => generation,
                };
                (n, g)
            })
            .collect();
        drop(s);
        if let Some(w) = &self.waker {
            w.wake();
        }
    }

    /// The namespaces that changed since the last call.
    pub fn take(&self) -> BTreeSet<String> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut s.dirty)
    }
}

impl Drop for Drift {
    fn drop(&mut self) {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop = true;
        if let Some(w) = &self.waker {
            w.wake();
        }
    }
}

/// The watching thread: keeps the watched set as wanted and reports what
/// changed.
fn watch(mut w: Watcher, shared: &Mutex<Shared>) {
    let mut watching: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let wanted = {
            let s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if s.stop {
                return;
            }
            s.wanted.clone()
        };
        if wanted != watching {
            for (name, g) in &watching {
                if wanted.get(name) != Some(g) {
                    w.remove(name);
                }
            }
            for (name, g) in &wanted {
                if watching.get(name) != Some(g) {
                    if let Err(e) = w.add(name) {
                        // Gone already (a pod being removed): nothing to watch.
                        tracing::debug!("not watching {name}: {e}");
                    }
                }
            }
            watching = wanted;
        }
        let changed = w.wait(Duration::from_secs(5));
        if !changed.is_empty() {
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dirty
                .extend(changed);
        }
    }
}
