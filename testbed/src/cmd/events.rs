//! `testbed events [NAME] [-f] [--json]`: what the controller did and saw,
//! from the state directory's event log.

use crate::Failure;
use anyhow::Context;
use std::time::Duration;
use testbed::controller::events;

/// Prints the events of `name`; with `follow`, keeps printing new ones.
pub fn run(target: Option<String>, follow: bool, json: bool) -> Result<(), Failure> {
    let plan = crate::one_testbed(target)?;
    let name = &crate::checked_name(&plan.name)?;
    let dir = name.dir();
    if !dir.exists() {
        eprintln!("error: no testbed named `{name}` is running");
        return Err(Failure::BadInput);
    }
    let (mut follower, read) = events::Follower::start(&dir).context("reading the events")?;
    let list = read.events;
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
        for e in follower.poll().context("reading the events")? {
            crate::print(&line(&e))?;
        }
        if !dir.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
