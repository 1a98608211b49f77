//! `testbed fault`, `testbed scale` and `testbed apply`: requests to the
//! controller of a running testbed. A refusal (a name that does not exist,
//! a change that cannot be made live) is exit 2; nothing changed.

use super::args::{ApplyArgs, FaultArgs, ImpairArgs, ScaleArgs};
use crate::Failure;
use clap::Subcommand;
use std::time::Duration;
use testbed::controller::control::{self, Reply, Request};
use testbed::controller::live::{Fault, Target};
use testbed::state::TestbedName;

/// A fault, as the command line names it.
#[derive(Subcommand)]
pub enum FaultCmd {
    /// Cut a node off: its LAN link goes down and its containers are killed
    /// (a machine that lost power); after `podEvictionTimeout` its pods are
    /// evicted and its replication controllers' pods made on ready nodes.
    NodeDown {
        /// The node.
        node: String,
        /// Undo it by itself after this long, e.g. 10s.
        #[arg(long = "for", value_parser = parse_for)]
        duration: Option<u64>,
    },
    /// Bring a node that is down back: empty, and taking pods again.
    NodeUp {
        /// The node.
        node: String,
    },
    /// Take a link down: a pod's (POD or NAMESPACE/POD), a node's
    /// (node:NAME or a node's name) or a host's (host:NAME).
    LinkDown {
        /// POD, NAMESPACE/POD, node:NAME, host:NAME.
        target: String,
        /// Undo it by itself after this long.
        #[arg(long = "for", value_parser = parse_for)]
        duration: Option<u64>,
    },
    /// Bring a link taken down with link-down up again.
    LinkUp {
        /// As for link-down.
        target: String,
    },
    /// Nodes (or hosts) that cannot reach the others on the LAN, both
    /// directions; with --from, only those.
    Partition {
        /// One side.
        #[arg(required = true)]
        nodes: Vec<String>,
        /// The other side (default: every other node and host).
        #[arg(long, num_args = 1..)]
        from: Vec<String>,
        /// Undo it by itself after this long.
        #[arg(long = "for", value_parser = parse_for)]
        duration: Option<u64>,
    },
    /// SIGKILL a pod's containers (or one): the restart policy decides.
    Kill {
        /// POD or NAMESPACE/POD.
        pod: String,
        /// Only this container.
        #[arg(short, long)]
        container: Option<String>,
    },
    /// Delete a pod: a replication controller makes it again (same name);
    /// a bare pod stays gone.
    Delete {
        /// POD or NAMESPACE/POD.
        pod: String,
    },
    /// Undo every fault in force.
    Clear,
}

/// `--for`: a duration of at least a millisecond, in milliseconds.
fn parse_for(text: &str) -> Result<u64, String> {
    match text.parse::<testbed::topology::units::Duration>() {
        Ok(d) if d.0 >= 1000 => Ok(d.0 / 1000),
        Ok(_) => Err("shorter than a millisecond".to_string()),
        Err(e) => Err(format!(
            "{e}\n  = help: a duration is a number and a unit: us, ms or s, e.g. 10s"
        )),
    }
}

/// `node:NAME`, `host:NAME`, or a pod.
fn target(t: &str, plan: &testbed::plan::Plan) -> Target {
    if let Some(h) = t.strip_prefix("host:") {
        Target::Host(h.to_string())
    } else if let Some(n) = t.strip_prefix("node:") {
        Target::Node(n.to_string())
    } else if plan.nodes.iter().any(|n| n.name == t) {
        Target::Node(t.to_string())
    } else if !t.contains('/') && plan.hosts.iter().any(|h| h.name == t) {
        Target::Host(t.to_string())
    } else {
        Target::Pod(t.to_string())
    }
}

/// The request a fault command makes.
pub fn fault_request(cmd: FaultCmd, plan: &testbed::plan::Plan) -> Result<Request, Failure> {
    Ok(match cmd {
        FaultCmd::NodeDown { node, duration: d } => Request::Fault {
            fault: Fault::NodeDown { node },
            for_ms: d,
        },
        FaultCmd::NodeUp { node } => Request::Clear {
            fault: Some(Fault::NodeDown { node }),
        },
        FaultCmd::LinkDown {
            target: t,
            duration: d,
        } => Request::Fault {
            fault: Fault::LinkDown {
                target: target(&t, plan),
            },
            for_ms: d,
        },
        FaultCmd::LinkUp { target: t } => Request::Clear {
            fault: Some(Fault::LinkDown {
                target: target(&t, plan),
            }),
        },
        FaultCmd::Partition {
            nodes,
            from,
            duration: d,
        } => Request::Fault {
            fault: Fault::Partition { nodes, from },
            for_ms: d,
        },
        FaultCmd::Kill { pod, container } => Request::Kill { pod, container },
        FaultCmd::Delete { pod } => Request::Delete { pod },
        FaultCmd::Clear => Request::Clear { fault: None },
    })
}

/// Sends `req` to the controller of `name` and reports its reply: the
/// message on stdout (or JSON), exit 2 for a refusal, 1 for a failure.
/// On a machine's share of a testbed spread over several, the request goes
/// to the machines it concerns (`controller::remote`).
pub fn send(name: &TestbedName, req: &Request, json: bool) -> Result<Reply, Failure> {
    let reply = ask(name, req, Duration::from_secs(300))?;
    report(&reply, json)?;
    Ok(reply)
}

/// The reply to `req` from the controller of `name`, or on a machine's
/// share from the machines it concerns, within `timeout`.
fn ask(name: &TestbedName, req: &Request, timeout: Duration) -> Result<Reply, Failure> {
    match testbed::lifecycle::running_plan(name) {
        Some(plan) if plan.machine.is_some() => {
            testbed::controller::remote::send(&plan, req, timeout)
                .map_err(|e| Failure::Runtime(anyhow::Error::new(e)))
        }
        _ => control::request(&name.dir(), req, timeout)
            .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}"))),
    }
}

fn report(reply: &Reply, json: bool) -> Result<(), Failure> {
    match reply.code {
        0 if json => crate::print(&format!(
            "{}\n",
            serde_json::to_string_pretty(reply).unwrap_or_default()
        ))?,
        0 => {
            if !reply.message.is_empty() {
                crate::print(&format!("{}\n", reply.message.trim_end()))?;
            }
        }
        2 => {
            eprintln!("error: {}", reply.message);
            return Err(Failure::BadInput);
        }
        code => {
            eprintln!("error: {}", reply.message);
            return Err(Failure::Reported(code));
        }
    }
    Ok(())
}

/// `testbed apply FILE`: the difference first, then the change (unless
/// `dry_run`).
pub fn apply(args: ApplyArgs) -> Result<(), Failure> {
    let ApplyArgs {
        file,
        dry_run,
        json,
    } = args;
    let loaded = crate::load(&file)?;
    let name = crate::checked_name(&loaded.plan.name)?;
    if testbed::lifecycle::running_plan(&name).is_none() {
        eprintln!(
            "error: no testbed named `{name}` is running: `testbed up {}` builds it",
            file.display()
        );
        return Err(Failure::BadInput);
    }
    let spec = testbed::controller::spec::Spec {
        file: file.display().to_string(),
        source: loaded.source.clone(),
        overlay: None,
        machine: None,
    };
    let preview = Request::Apply {
        spec: spec.clone(),
        dry_run: true,
    };
    if dry_run || json {
        send(&name, &Request::Apply { spec, dry_run }, json)?;
        return Ok(());
    }
    let reply = send(&name, &preview, false)?;
    if reply.message == "no change" {
        return Ok(());
    }
    // The change itself goes where the preview went: on a machine's share,
    // to every machine.
    let done = ask(
        &name,
        &Request::Apply {
            spec,
            dry_run: false,
        },
        Duration::from_secs(600),
    )?;
    match done.code {
        0 => {
            eprintln!("{name}: applied");
            Ok(())
        }
        _ => report(&done, false),
    }
}

/// The impairments `testbed impair` asks for (`None`: none, with
/// `--clear`); no flag at all, or `--clear` with flags, is exit 2 (nothing
/// is cleared by accident). The values were checked by their parsers.
fn wanted_link(a: &ImpairArgs) -> Result<Option<testbed::plan::types::LinkPlan>, Failure> {
    let link = testbed::plan::types::LinkPlan {
        delay: a.delay,
        jitter: a.jitter,
        loss: a.loss,
        duplicate: a.duplicate,
        reorder: a.reorder,
        rate: a.rate,
    };
    let given = [
        a.delay.is_some(),
        a.jitter.is_some(),
        a.loss.is_some(),
        a.duplicate.is_some(),
        a.reorder.is_some(),
        a.rate.is_some(),
    ]
    .contains(&true);
    match (a.clear, given) {
        (true, false) => Ok(None),
        (true, true) => {
            eprintln!("error: --clear removes every impairment: give it alone, or only the flags of the impairments wanted");
            Err(Failure::BadInput)
        }
        (false, false) => {
            eprintln!("error: say what to change: e.g. --delay 10ms --loss 1%, or --clear to remove every impairment");
            Err(Failure::BadInput)
        }
        (false, true) => Ok((link != Default::default()).then_some(link)),
    }
}

/// `testbed impair NAME MACHINE ...`: changes a node's or host's link
/// impairments through the controller (or, with `show`, only prints them),
/// then prints what is in force.
pub fn impair(args: ImpairArgs) -> Result<(), Failure> {
    let (machine, json) = (args.machine.as_str(), args.json);
    // A change that asks for nothing is refused before the testbed is
    // looked at.
    let change = match args.show {
        true => None,
        false => Some(wanted_link(&args)?),
    };
    let name = crate::target_name(&args.target)?;
    if let Some(link) = change {
        let req = testbed::controller::control::Request::Impair {
            machine: machine.to_string(),
            link,
        };
        send(&name, &req, false)?;
        if !json {
            eprintln!("{name}: impairments of {machine} changed");
            return Ok(());
        }
    }
    let plan = crate::running_plan(&name)?;
    let node = plan
        .nodes
        .iter()
        .find(|n| n.name == machine)
        .map(|n| &n.link);
    let host = plan
        .hosts
        .iter()
        .find(|h| h.name == machine)
        .map(|h| &h.link);
    let Some(link) = node.or(host).cloned() else {
        let names: Vec<&str> = plan
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .chain(plan.hosts.iter().map(|h| h.name.as_str()))
            .collect();
        eprintln!(
            "error: {name} has no node or host `{machine}`{}",
            testbed::diag::did_you_mean(machine, &names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default()
        );
        return Err(Failure::BadInput);
    };
    let report = testbed::report::ImpairReport {
        testbed: name.to_string(),
        machine: machine.to_string(),
        link,
    };
    let text = if json {
        serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)? + "\n"
    } else {
        format!("{}\n", report.text())
    };
    crate::print(&text)
}

/// `testbed fault ...`: a fault (or its undo) sent to the controller of the
/// testbed named (or the only one running).
pub fn fault(args: FaultArgs) -> Result<(), Failure> {
    let FaultArgs {
        testbed,
        json,
        fault,
    } = args;
    let plan = crate::one_testbed(testbed)?;
    let name = crate::checked_name(&plan.name)?;
    // On a machine's share, names are those of the whole testbed.
    let names = match plan.machine {
        Some(_) => testbed::controller::remote::whole(&plan).unwrap_or(plan),
        None => plan,
    };
    let req = fault_request(fault, &names)?;
    send(&name, &req, json)?;
    Ok(())
}

/// `testbed scale [-t NAME] RC N`.
pub fn scale(args: ScaleArgs) -> Result<(), Failure> {
    let ScaleArgs {
        testbed,
        rc,
        replicas,
        json,
    } = args;
    let plan = crate::one_testbed(testbed)?;
    let name = crate::checked_name(&plan.name)?;
    send(&name, &Request::Scale { rc, replicas }, json)?;
    Ok(())
}
