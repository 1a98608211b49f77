//! Requests across machines, for a testbed spread over several: `fault`,
//! `scale`, `apply` and `impair` made on any machine reach the controllers
//! of the machines they concern through etcd. [`route`] (pure) says which:
//! the machine running the node, host or pod a fault names (pods by the
//! machines' heartbeats, which list every pod each runs); every machine for
//! what concerns all (`scale`, `apply`, a partition, clearing every fault).
//! [`forward`] puts the request under the machine's inbox
//! (`/testbed/NAME/inbox/MACHINE/ID`) and waits for its reply
//! (`/testbed/NAME/replies/ID`, expiring by itself after a minute); each
//! controller's inbox thread ([`serve_inbox`]) takes its requests, hands
//! them to its controller through the control socket, as the CLI does, and
//! writes the replies.

use super::control::{self, Reply, Request};
use super::live::{Fault, Target};
use crate::cluster::MachineRecord;
use crate::plan::Plan;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why a request could not reach a machine or come back.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// etcd did not take or give the request or its reply.
    #[error("{0}")]
    Etcd(#[from] overlay::etcd::EtcdError),
    /// This machine's own controller did not answer.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The other machine did not answer in time.
    #[error(
        "machine `{machine}` did not answer within {after:?}: is its share of `{testbed}` up?"
    )]
    Timeout {
        /// The machine.
        machine: String,
        /// The testbed.
        testbed: String,
        /// How long it was given.
        after: Duration,
    },
    /// A request or a reply that is not JSON of its kind.
    #[error("{what}: {source}")]
    Json {
        /// Which.
        what: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// etcd is away while the request concerns other machines.
    #[error("{source}: the request concerns {machines}")]
    Unreachable {
        /// The cause.
        source: overlay::etcd::EtcdError,
        /// The machines it concerns.
        machines: String,
    },
}

/// How long a reply waits in etcd for its requester.
const REPLY_TTL: Duration = Duration::from_secs(60);

/// Requests waiting in an inbox that one look takes (a bound per round).
const INBOX_BATCH: usize = 64;

/// The machines that must handle `req`, given the whole testbed `whole`
/// (every node's and host's machine) and the machines' heartbeats
/// `records` (every pod's); `me` alone when nothing says otherwise (the
/// local controller then refuses an unknown name with its closest one).
pub fn route(
    req: &Request,
    me: &str,
    whole: &Plan,
    records: &BTreeMap<String, MachineRecord>,
) -> Vec<String> {
    let all: Vec<String> = whole.machines.iter().map(|m| m.name.clone()).collect();
    let node = |n: &str| {
        whole
            .nodes
            .iter()
            .find(|x| x.name == n)
            .and_then(|x| x.machine.clone())
    };
    let host = |h: &str| {
        whole
            .hosts
            .iter()
            .find(|x| x.name == h)
            .and_then(|x| x.machine.clone())
    };
    let pod = |p: &str| {
        let qualified = if p.contains('/') {
            p.to_string()
        } else {
            format!("default/{p}")
        };
        records
            .values()
            .find(|r| r.pods.contains(&qualified))
            .map(|r| r.machine.clone())
    };
    let target = |t: &Target| match t {
        Target::Node(n) => node(n),
        Target::Host(h) => host(h),
        Target::Pod(p) => pod(p),
    };
    let one = match req {
        Request::Fault { fault, .. } | Request::Clear { fault: Some(fault) } => match fault {
            Fault::NodeDown { node: n } => node(n),
            Fault::LinkDown { target: t } => target(t),
            Fault::Partition { .. } => return all,
        },
        Request::Kill { pod: p, .. } | Request::Delete { pod: p } => pod(p),
        Request::Impair { machine, .. } => node(machine).or_else(|| host(machine)),
        Request::Clear { fault: None } | Request::Scale { .. } | Request::Apply { .. } => {
            return all
        }
        Request::Probe { probe, .. } => machine_of_netns(&probe.netns, whole, records),
    };
    vec![one.unwrap_or_else(|| me.to_string())]
}

/// The machine where network namespace `netns` of the testbed `whole`
/// lives: a node's or host's by the plan, a pod's by the heartbeats.
pub fn machine_of_netns(
    netns: &str,
    whole: &Plan,
    records: &BTreeMap<String, MachineRecord>,
) -> Option<String> {
    let rest = netns.strip_prefix(&format!("{}.", whole.prefix))?;
    if let Some(n) = rest.strip_prefix("node.") {
        return whole.nodes.iter().find(|x| x.name == n)?.machine.clone();
    }
    if let Some(h) = rest.strip_prefix("host.") {
        return whole.hosts.iter().find(|x| x.name == h)?.machine.clone();
    }
    let (ns, name) = rest.strip_prefix("pod.")?.split_once('.')?;
    let key = format!("{ns}/{name}");
    records
        .values()
        .find(|r| r.pods.contains(&key))
        .map(|r| r.machine.clone())
}

/// A check prober for a machine's share `plan` of a testbed spread over
/// several: a probe from a namespace of this machine is sent here; one from
/// another machine's is handed to that machine through etcd.
pub fn prober(
    plan: &Plan,
    whole: &Plan,
) -> impl Fn(&crate::check::Probe, Duration, Option<&str>) -> crate::check::Outcome + Sync {
    use crate::check::Outcome;
    let dir = std::path::Path::new(&plan.state_dir).to_path_buf();
    let store = crate::cluster::agent::connect(plan).and_then(Result::ok);
    let (plan, whole) = (plan.clone(), whole.clone());
    move |p, timeout, body| {
        if crate::kernel::netns::path(&p.netns).exists() {
            return crate::check::probe::probe(p, timeout, body);
        }
        let records = crate::cluster::read_view(&dir)
            .map(|v| v.machines)
            .unwrap_or_default();
        let Some(machine) = machine_of_netns(&p.netns, &whole, &records) else {
            return Outcome::Error(format!("{} runs on no machine of the testbed", p.from));
        };
        let Some(store) = &store else {
            return Outcome::Error(format!(
                "{} runs on machine {machine}, and etcd does not answer",
                p.from
            ));
        };
        let req = Request::Probe {
            probe: p.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            body: body.map(str::to_string),
        };
        match forward(
            &plan,
            store,
            &machine,
            &req,
            timeout + Duration::from_secs(10),
        ) {
            Ok(r) if r.code == 0 => serde_json::from_str(&r.message)
                .unwrap_or_else(|e| Outcome::Error(format!("{machine}'s answer: {e}"))),
            Ok(r) => Outcome::Error(format!("{machine}: {}", r.message)),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

/// The whole testbed as it runs now, from a machine's share `plan`: the
/// file with the live changes this machine knows (every pod is pinned
/// where it runs, on every machine) laid over it.
pub fn whole_live(plan: &Plan) -> Option<Plan> {
    let dir = std::path::Path::new(&plan.state_dir);
    let topo = super::spec::read(dir).ok()?.load_whole().ok()?.topology;
    let live = super::live::read(dir).ok()?;
    super::desired::desired(&topo, &live).ok().map(|d| d.plan)
}

/// Sends `req` to machine `machine`'s controller through etcd and waits up
/// to `timeout` for its reply.
pub fn forward(
    plan: &Plan,
    store: &overlay::etcd::EtcdStore,
    machine: &str,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, RemoteError> {
    let me = plan.machine.as_deref().unwrap_or("local");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{me}-{}-{nanos}", std::process::id());
    let key = format!("{}{id}", crate::cluster::inbox_prefix(&plan.name, machine));
    let text = serde_json::to_vec(req).map_err(|source| RemoteError::Json {
        what: "the request".into(),
        source,
    })?;
    store.put_expiring(&key, &text, timeout.max(Duration::from_secs(1)))?;
    let reply_key = crate::cluster::reply_key(&plan.name, &id);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = store.get_raw(&reply_key)? {
            let _ = store.delete_prefix(&reply_key);
            return serde_json::from_slice(&v).map_err(|source| RemoteError::Json {
                what: format!("{machine}'s reply"),
                source,
            });
        }
        if Instant::now() > deadline {
            let _ = store.delete_prefix(&key);
            return Err(RemoteError::Timeout {
                machine: machine.to_string(),
                testbed: plan.name.clone(),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the thread that serves this machine's inbox for the controller
/// whose state directory is `dir` (a share of a testbed in etcd), until
/// `stop`.
pub fn serve_inbox(
    dir: PathBuf,
    plan: &Plan,
    stop: &'static AtomicBool,
) -> Option<std::thread::JoinHandle<()>> {
    let me = plan.machine.clone()?;
    plan.cluster.etcd.as_ref()?;
    let plan = plan.clone();
    Some(std::thread::spawn(move || {
        let prefix = crate::cluster::inbox_prefix(&plan.name, &me);
        let mut store = None;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if store.is_none() {
                store = crate::cluster::agent::connect(&plan)
                    .and_then(Result::ok)
                    .map(std::sync::Arc::new);
            }
            let Some(s) = &store else { continue };
            let Ok(list) = s.list_prefix(&prefix) else {
                continue;
            };
            for (key, value) in list.kvs.into_iter().take(INBOX_BATCH) {
                // Taken once: deleted before it is handled.
                if s.delete_prefix(&key).unwrap_or(0) == 0 {
                    continue;
                }
                let id = key.strip_prefix(&prefix).unwrap_or_default().to_string();
                let rk = crate::cluster::reply_key(&plan.name, &id);
                match serde_json::from_slice::<Request>(&value) {
                    // A probe waits for its answer: on a thread of its own,
                    // so that the probes of one round go out together.
                    Ok(Request::Probe {
                        probe,
                        timeout_ms,
                        body,
                    }) => {
                        let store = std::sync::Arc::clone(s);
                        std::thread::spawn(move || {
                            let timeout = Duration::from_millis(timeout_ms.min(60_000));
                            let got = crate::check::probe::probe(&probe, timeout, body.as_deref());
                            let reply = Reply {
                                code: 0,
                                message: serde_json::to_string(&got).unwrap_or_default(),
                                changes: None,
                            };
                            answer(&store, &rk, &reply);
                        });
                    }
                    Ok(req) => {
                        let reply = control::request(&dir, &req, Duration::from_secs(300))
                            .unwrap_or_else(|e| Reply {
                                code: 1,
                                message: e.to_string(),
                                changes: None,
                            });
                        answer(s, &rk, &reply);
                    }
                    Err(e) => {
                        let reply = Reply {
                            code: 2,
                            message: format!("not a request: {e}"),
                            changes: None,
                        };
                        answer(s, &rk, &reply);
                    }
                }
            }
        }
    }))
}

/// Writes `reply` at `key` for its requester (it expires by itself).
fn answer(store: &overlay::etcd::EtcdStore, key: &str, reply: &Reply) {
    let text = serde_json::to_vec(reply).unwrap_or_default();
    if let Err(e) = store.put_expiring(key, &text, REPLY_TTL) {
        tracing::warn!(error = %e, "writing a reply for another machine");
    }
}

/// Sends `req` on behalf of a command run on machine `plan.machine`: to
/// every machine [`route`] names, this one through its control socket and
/// the others through etcd. The replies joined: the highest code, each
/// message under its machine's name when there are several.
pub fn send(plan: &Plan, req: &Request, timeout: Duration) -> Result<Reply, RemoteError> {
    let dir = std::path::Path::new(&plan.state_dir);
    let local = || control::request(dir, req, timeout).map_err(RemoteError::from);
    let Some(me) = plan.machine.clone() else {
        return local();
    };
    let Some(whole) = whole(plan) else {
        return local();
    };
    let records = crate::cluster::read_view(dir)
        .map(|v| v.machines)
        .unwrap_or_default();
    let targets = route(req, &me, &whole, &records);
    if targets == [me.clone()] {
        return local();
    }
    let store = match crate::cluster::agent::connect(plan) {
        Some(Ok(s)) => s,
        Some(Err(source)) => {
            return Err(RemoteError::Unreachable {
                source,
                machines: targets.join(", "),
            })
        }
        None => return local(),
    };
    let mut replies = Vec::new();
    for m in &targets {
        let r = if *m == me {
            local()
        } else {
            forward(plan, &store, m, req, timeout)
        };
        replies.push((m.clone(), r?));
    }
    Ok(join(replies))
}

/// The whole testbed a machine's share `plan` is part of, as filed (the
/// share's own state directory holds the file); `None` when it cannot be
/// read.
pub fn whole(plan: &Plan) -> Option<Plan> {
    let dir = std::path::Path::new(&plan.state_dir);
    let spec = super::spec::read(dir).ok()?;
    spec.load_whole().ok().map(|l| l.plan)
}

/// One reply of several machines'.
fn join(replies: Vec<(String, Reply)>) -> Reply {
    if replies.len() == 1 {
        return replies.into_iter().map(|(_, r)| r).next().unwrap_or(Reply {
            code: 1,
            message: "no reply".into(),
            changes: None,
        });
    }
    let code = replies.iter().map(|(_, r)| r.code).max().unwrap_or(0);
    let message = replies
        .iter()
        .map(|(m, r)| format!("{m}: {}", r.message.trim_end()))
        .collect::<Vec<_>>()
        .join("\n");
    // One machine's changes (the first that has any): the JSON keeps its
    // one shape; the message tells every machine's.
    let changes = replies.iter().find_map(|(_, r)| r.changes.clone());
    Reply {
        code,
        message,
        changes,
    }
}

#[cfg(test)]
mod tests;
