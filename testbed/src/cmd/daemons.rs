//! The hidden subcommands the testbed starts itself, each a long-running
//! process inside a namespace: `supervise NAME` (the controller),
//! `proxy-daemon NAME NODE` and `overlay-daemon NAME NODE`. Their
//! arguments are checked as any command line's are.

use super::args::{OverlayDaemonArgs, ProxyDaemonArgs, SuperviseArgs};
use super::common::{checked_name, checked_node, running_plan, Failure};
use anyhow::Context;

/// `testbed supervise NAME`.
pub(crate) fn supervise(args: SuperviseArgs) -> Result<(), Failure> {
    let name = checked_name(&args.name)?;
    testbed::controller::run::run_from_state(&name).context("controller")?;
    Ok(())
}

/// `testbed proxy-daemon NAME NODE`.
pub(crate) fn proxy(args: ProxyDaemonArgs) -> Result<(), Failure> {
    let (name, node) = (checked_name(&args.name)?, args.node.as_str());
    checked_node(node)?;
    let plan = running_plan(&name)?;
    testbed::services::userspace::run_daemon(&plan, node).context("userspace proxy")?;
    Ok(())
}

/// `testbed overlay-daemon NAME NODE`.
pub(crate) fn overlay(args: OverlayDaemonArgs) -> Result<(), Failure> {
    let (name, node) = (checked_name(&args.name)?, args.node.as_str());
    checked_node(node)?;
    let plan = running_plan(&name)?;
    testbed::overlay_run::run_daemon(&plan, node).context("overlay daemon")?;
    Ok(())
}
