//! `testbed events [NAME] [-f] [--json]`: what the controller did and saw,
//! from the state directory's event log; on a machine's share of a testbed
//! spread over several, with the other machines' last events from etcd.

use super::args::EventsArgs;
use crate::Failure;
use anyhow::Context;
use std::time::Duration;
use testbed::controller::events;

/// Prints the events of `name`; with `follow`, keeps printing new ones.
pub fn run(args: EventsArgs) -> Result<(), Failure> {
    let EventsArgs {
        target,
        follow,
        json,
    } = args;
    let plan = crate::one_testbed(target)?;
    let name = &crate::checked_name(&plan.name)?;
    let dir = name.dir();
    if !dir.exists() {
        eprintln!("error: no testbed named `{name}` is running");
        return Err(Failure::BadInput);
    }
    let (mut follower, read) = events::Follower::start(&dir).context("reading the events")?;
    let mut list = read.events;
    // A machine's share: the other machines' last events too, from etcd.
    let others = Others::of(&plan);
    if let Some(o) = &others {
        for e in &mut list {
            e.machine = Some(o.me.clone());
        }
        list.extend(o.fetch());
        list.sort_by_key(|e| e.unix_ms);
    }
    let mut seen_remote = list
        .iter()
        .filter(|e| {
            others
                .as_ref()
                .is_some_and(|o| e.machine.as_deref() != Some(&o.me))
        })
        .map(|e| e.unix_ms)
        .max()
        .unwrap_or(0);
    if json && !follow {
        let doc = testbed::report::EventsReport {
            testbed: name.to_string(),
            events: list,
        };
        return crate::print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).context("printing")?
        ));
    }
    let line = |e: &events::Event| -> String {
        if json {
            serde_json::to_string(e).unwrap_or_default() + "\n"
        } else {
            events::render(std::slice::from_ref(e))
        }
    };
    if json {
        for e in &list {
            crate::print(&line(e))?;
        }
    } else {
        crate::print(&events::render(&list))?;
    }
    if !follow {
        return Ok(());
    }
    loop {
        for mut e in follower.poll().context("reading the events")? {
            e.machine = others.as_ref().map(|o| o.me.clone());
            crate::print(&line(&e))?;
        }
        if let Some(o) = &others {
            let since = seen_remote;
            for e in o.fetch().into_iter().filter(|e| e.unix_ms > since) {
                seen_remote = seen_remote.max(e.unix_ms);
                crate::print(&line(&e))?;
            }
        }
        if !dir.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The other machines of a share, to read their events from.
struct Others {
    me: String,
    testbed: String,
    store: Option<overlay::etcd::EtcdStore>,
}

impl Others {
    fn of(plan: &testbed::plan::Plan) -> Option<Others> {
        let me = plan.machine.clone()?;
        let store = match testbed::cluster::agent::connect(plan)? {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("warning: {e}: only this machine's events");
                None
            }
        };
        Some(Others {
            me,
            testbed: plan.name.clone(),
            store,
        })
    }

    fn fetch(&self) -> Vec<events::Event> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        testbed::cluster::events::others(store, &self.testbed, &self.me).unwrap_or_else(|e| {
            eprintln!("warning: the other machines' events: {e}");
            Vec::new()
        })
    }
}
