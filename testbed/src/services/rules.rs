//! The rules of each proxy mode, and loading them into the nodes'
//! namespaces: one `iptables-restore --noflush` or `nft -f` transaction per
//! node, run inside the node's namespace. Also reads back what is installed.

use super::ServicesError;
use crate::kernel::netns::Netns;
use crate::plan::types::NodePlan as Node;
use crate::plan::Plan;
use proxy::Mode;

/// The program (and its arguments) that loads the mode's rules.
fn loader(mode: Mode) -> (&'static str, &'static [&'static str]) {
    match mode {
        Mode::Nftables => ("nft", &["-f", "-"]),
        Mode::Iptables | Mode::Userspace => ("iptables-restore", &["--noflush"]),
    }
}

/// The rules `up` loads into every node for `services` (hooks included).
pub fn initial(mode: Mode, services: &[proxy::Service]) -> String {
    match mode {
        Mode::Iptables => proxy::iptables::render(services),
        Mode::Nftables => proxy::nftables::render(services),
        Mode::Userspace => proxy::portals::render(services, true),
    }
}

/// The transaction that takes every node's rules from the endpoints of
/// `before` to those of `after`; empty when the rules stay as they are.
pub fn update(mode: Mode, before: &[proxy::Service], after: &[proxy::Service]) -> String {
    match mode {
        Mode::Iptables => proxy::iptables::update(before, after),
        Mode::Nftables => proxy::nftables::update(before, after),
        Mode::Userspace if proxy::portals::changed(before, after) => {
            proxy::portals::render(after, false)
        }
        Mode::Userspace => String::new(),
    }
}

/// Every node's rules for `services` without touching the hooks: what a
/// follower loads to recover from a failed update.
pub fn resync(mode: Mode, services: &[proxy::Service]) -> String {
    match mode {
        Mode::Iptables => proxy::iptables::resync(services),
        Mode::Nftables => proxy::nftables::render(services),
        Mode::Userspace => proxy::portals::render(services, false),
    }
}

/// What `testbed rules` prints: the rules `up` loads, or with `without`, the
/// transaction that takes those pods' endpoints out (as when they stop
/// being ready).
pub fn rendered(plan: &Plan, without: &[String]) -> String {
    let mode = plan.cluster.proxy;
    if without.is_empty() {
        return initial(mode, &plan.services);
    }
    let mut after = plan.services.clone();
    for s in &mut after {
        for p in &mut s.ports {
            p.endpoints.retain(|e| !without.contains(&e.pod));
        }
    }
    update(mode, &plan.services, &after)
}

/// Loads the service rules into every node, hooks included: for the fresh
/// namespaces of `up`.
pub fn program(plan: &Plan) -> Result<(), ServicesError> {
    if plan.services.is_empty() {
        return Ok(());
    }
    let text = initial(plan.cluster.proxy, &plan.services);
    for n in &plan.nodes {
        load(plan.cluster.proxy, n, &text)?;
    }
    Ok(())
}

/// The hooks (jumps from the kernel's own chains into the testbed's, by
/// table) that `initial` rules hold and the `installed` ones lack, as an
/// `iptables-restore` transaction; empty when none is missing. (nftables
/// mode keeps its hooks in its own table: none.)
pub fn missing_hooks(mode: Mode, initial: &str, installed: &str) -> String {
    if mode == Mode::Nftables {
        return String::new();
    }
    fn hooks(text: &str) -> Vec<(String, String)> {
        let mut table = String::new();
        let mut out = Vec::new();
        for l in text.lines() {
            if let Some(t) = l.strip_prefix('*') {
                table = t.to_string();
            } else if l.starts_with("-A ") && !l.starts_with("-A TB-") {
                out.push((table.clone(), l.trim().to_string()));
            }
        }
        out
    }
    let have = hooks(installed);
    let mut out = String::new();
    let mut current: Option<String> = None;
    for (table, line) in hooks(initial) {
        if have.contains(&(table.clone(), line.clone())) {
            continue;
        }
        if current.as_ref() != Some(&table) {
            if current.is_some() {
                out.push_str("COMMIT\n");
            }
            out.push_str(&format!("*{table}\n"));
            current = Some(table);
        }
        out.push_str(&line);
        out.push('\n');
    }
    if current.is_some() {
        out.push_str("COMMIT\n");
    }
    out
}

/// Puts node `n`'s rules for `services` back after they were changed
/// behind the testbed's back: the testbed's own chains or table loaded
/// whole, then any hook that went missing. Returns the rules installed
/// afterwards.
pub fn restore(mode: Mode, n: &Node, services: &[proxy::Service]) -> Result<String, ServicesError> {
    load(mode, n, &resync(mode, services))?;
    let hooks = missing_hooks(mode, &initial(mode, services), &installed(mode, n)?);
    if !hooks.is_empty() {
        load(mode, n, &hooks)?;
    }
    installed(mode, n)
}

/// Loads `rules` into node `n`'s namespace in one transaction.
pub fn load(mode: Mode, n: &Node, rules: &str) -> Result<(), ServicesError> {
    let (program, args) = loader(mode);
    let out = run_in(n, program, args, Some(rules))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ServicesError::Restore {
            node: n.name.clone(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The UDP endpoints (address, port) of `before` that `after` no longer
/// has.
pub fn udp_endpoints_gone(
    before: &[proxy::Service],
    after: &[proxy::Service],
) -> Vec<(std::net::Ipv4Addr, u16)> {
    let mut gone = Vec::new();
    for (b, a) in before.iter().zip(after) {
        for (bp, ap) in b.ports.iter().zip(&a.ports) {
            if bp.protocol != proxy::Protocol::UDP {
                continue;
            }
            for e in bp.endpoints.iter().filter(|e| !ap.endpoints.contains(e)) {
                if !gone.contains(&(e.ip, e.port)) {
                    gone.push((e.ip, e.port));
                }
            }
        }
    }
    gone
}

/// Ends the UDP flows that node `n`'s connection tracking still sends to
/// endpoints that left (`gone`), as kube-proxy does: a UDP client that keeps
/// one socket would otherwise keep reaching the old endpoint for as long as
/// it sends, whatever the rules now say. Its next datagram is a new flow and
/// meets the current rules.
pub fn forget_udp_flows(
    n: &Node,
    gone: &[(std::net::Ipv4Addr, u16)],
) -> Result<usize, crate::kernel::conntrack::ConntrackError> {
    crate::kernel::conntrack::delete_udp_replying_from(&n.netns, gone)
}

/// The rules installed in node `n` now, as the kernel reports them: the
/// testbed's table (nftables mode) or its chains in `iptables-save`'s
/// format (iptables and userspace modes).
pub fn installed(mode: Mode, n: &Node) -> Result<String, ServicesError> {
    let out = match mode {
        Mode::Nftables => run_in(
            n,
            "nft",
            &["list", "table", "ip", proxy::nftables::TABLE],
            None,
        )?,
        Mode::Iptables | Mode::Userspace => run_in(n, "iptables-save", &[], None)?,
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // No table yet (a testbed without services) is nothing installed.
        if err.contains("No such file or directory") {
            return Ok(String::new());
        }
        return Err(ServicesError::Restore {
            node: n.name.clone(),
            message: err.trim().to_string(),
        });
    }
    Ok(match mode {
        Mode::Nftables => text,
        // Only the tables' headers, the testbed's chains and the rules that
        // are in or jump to them; the counters of the declarations dropped
        // so that two reads compare equal.
        Mode::Iptables | Mode::Userspace => {
            text.lines()
                .filter(|l| l.starts_with('*') || l.starts_with("COMMIT") || l.contains("TB-"))
                .map(|l| match l.strip_prefix(':') {
                    Some(decl) if decl.starts_with("TB-") => {
                        format!(":{}", decl.split(' ').next().unwrap_or(decl))
                    }
                    _ => l.to_string(),
                })
                .filter(|l| !l.starts_with(':') || l.starts_with(":TB-"))
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
    })
}

/// Runs `program args` inside node `n`'s namespace, feeding it `input`.
fn run_in(
    n: &Node,
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<std::process::Output, ServicesError> {
    let ns = Netns::open(&n.netns)?;
    ns.command(program, args, input)
        .map_err(|e| ServicesError::Restore {
            node: n.name.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed (Debian: apt-get install iptables nftables)")
            } else {
                e.to_string()
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_missing_hooks_are_loaded_again() {
        let initial = "*nat\n:TB-SERVICES - [0:0]\n-A PREROUTING -j TB-SERVICES\n-A OUTPUT -j TB-SERVICES\n-A TB-SERVICES -j RETURN\nCOMMIT\n*filter\n-A INPUT -j TB-SERVICES\nCOMMIT\n";
        let installed = "*nat\n:TB-SERVICES\n-A OUTPUT -j TB-SERVICES\nCOMMIT\n*filter\nCOMMIT\n";
        assert_eq!(
            missing_hooks(Mode::Iptables, initial, installed),
            "*nat\n-A PREROUTING -j TB-SERVICES\nCOMMIT\n*filter\n-A INPUT -j TB-SERVICES\nCOMMIT\n"
        );
        assert_eq!(missing_hooks(Mode::Iptables, initial, initial), "");
        assert_eq!(missing_hooks(Mode::Nftables, initial, ""), "");
    }
}
