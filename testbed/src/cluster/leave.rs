//! What `down` does in etcd after it removed a machine's share: when no
//! other machine's heartbeat is left, the testbed's keys go (its own
//! prefix, and in flannel's layout the config and the leases of its pod
//! network); otherwise they stay for the shares still running. With etcd
//! away nothing is removed there, and `down` says so.

use crate::plan::Plan;
use overlay::registry::SubnetStore;
use serde::{Deserialize, Serialize};

/// What happened in etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Other machines still run their shares: the keys stay.
    OthersRun,
    /// This was the last share: the testbed's keys were removed.
    Removed,
    /// etcd could not be asked: nothing was removed there.
    Unreachable,
}

/// What `down` did in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Left {
    /// What happened.
    pub outcome: Outcome,
    /// `othersRun`: the machines whose shares still run.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub machines: Vec<String>,
    /// `removed`: how many keys were removed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keys: Option<u64>,
    /// `unreachable`: why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// `unreachable`: what is left to remove by hand.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub left: Vec<String>,
}

impl Left {
    fn new(outcome: Outcome) -> Left {
        Left {
            outcome,
            machines: Vec::new(),
            keys: None,
            error: None,
            left: Vec::new(),
        }
    }
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.outcome {
            Outcome::OthersRun => write!(
                f,
                "the shares on {} still run: the testbed's keys in etcd stay until the last share goes down",
                self.machines.join(", ")
            ),
            Outcome::Removed => write!(
                f,
                "the last share: removed the testbed's {} keys from etcd",
                self.keys.unwrap_or(0)
            ),
            Outcome::Unreachable => write!(
                f,
                "could not clean etcd ({}); left there: {}",
                self.error.as_deref().unwrap_or("no answer"),
                self.left.join(", ")
            ),
        }
    }
}

/// Cleans etcd after machine `plan.machine`'s share of `plan` went down;
/// `None` for a testbed that keeps nothing in etcd.
pub fn after_down(plan: &Plan) -> Option<Left> {
    let etcd = plan.cluster.etcd.as_ref()?;
    let own = super::prefix(&plan.name);
    let flannel = format!("{}/", etcd.prefix.trim_end_matches('/'));
    let unreachable = |error: String| Left {
        error: Some(error),
        left: vec![
            format!("{own} (etcdctl del --prefix {own})"),
            format!("the config and leases under {flannel}"),
        ],
        ..Left::new(Outcome::Unreachable)
    };
    let store = match super::agent::connect(plan)? {
        Ok(s) => s,
        Err(e) => return Some(unreachable(e.to_string())),
    };
    let me = plan
        .machine
        .as_deref()
        .unwrap_or(super::agent::ONLY_MACHINE);
    let prefix = super::machines_prefix(&plan.name);
    let others: Vec<String> = match store.list_prefix(&prefix) {
        Ok(l) => l
            .kvs
            .iter()
            .filter_map(|(k, v)| super::decode(&prefix, k, v))
            .map(|r| r.machine)
            .filter(|m| m != me)
            .collect(),
        Err(e) => return Some(unreachable(e.to_string())),
    };
    if !others.is_empty() {
        return Some(Left {
            machines: others,
            ..Left::new(Outcome::OthersRun)
        });
    }
    Some(remove_all(&store, plan, &own).unwrap_or_else(unreachable))
}

/// Removes the testbed's own keys, and its config and leases in flannel's
/// layout (only the leases of subnets of its pod network).
fn remove_all(store: &overlay::etcd::EtcdStore, plan: &Plan, own: &str) -> Result<Left, String> {
    let mut keys = store.delete_prefix(own).map_err(|e| e.to_string())? as u64;
    let leases = store.leases().map_err(|e| e.to_string())?;
    for l in leases
        .iter()
        .filter(|l| plan.cluster.pod_cidr.contains(l.subnet.network()))
    {
        store.revoke(l.subnet).map_err(|e| e.to_string())?;
        keys += 1;
    }
    let config = store.layout().config_key();
    keys += store.delete_prefix(&config).map_err(|e| e.to_string())? as u64;
    Ok(Left {
        keys: Some(keys),
        ..Left::new(Outcome::Removed)
    })
}
