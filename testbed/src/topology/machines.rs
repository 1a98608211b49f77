//! Checks what the multi-machine fields say about each other: machine
//! names and addresses are unique, every `machine:` of a node or host names
//! a listed machine (with "did you mean"), `machine:` needs a `machines:`
//! list, `registry: etcd` needs endpoints and `etcd` needs `registry: etcd`.

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::topology::model::{Registry, Topology};
use std::collections::HashMap;

/// Adds every problem of the multi-machine fields of `topo` to `diags`.
pub fn check(topo: &Topology, diags: &mut Diagnostics) {
    unique(topo, diags);
    references(topo, diags);
    registry(topo, diags);
}

fn unique(topo: &Topology, diags: &mut Diagnostics) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<std::net::Ipv4Addr, (&str, usize)> = HashMap::new();
    for m in &topo.machines {
        if let Some(line) = names.get(m.name.value.as_str()) {
            diags.push(
                Diagnostic::error(
                    &m.name.at,
                    format!(
                        "a machine named `{}` is already listed (line {line})",
                        m.name.value
                    ),
                )
                .help("machine names are unique: rename one, or remove the second entry"),
            );
        } else {
            names.insert(&m.name.value, m.name.at.pos.line);
        }
        if let Some((other, line)) = addresses.get(&m.address.value) {
            diags.push(
                Diagnostic::error(
                    &m.address.at,
                    format!(
                        "the address {} is already the machine `{other}`'s (line {line})",
                        m.address.value
                    ),
                )
                .help("each machine has an address of its own on the network that joins them: correct one of them"),
            );
        } else {
            addresses.insert(m.address.value, (&m.name.value, m.address.at.pos.line));
        }
    }
}

fn references(topo: &Topology, diags: &mut Diagnostics) {
    let mut known: Vec<&str> = Vec::new();
    for m in &topo.machines {
        if !known.contains(&m.name.value.as_str()) {
            known.push(&m.name.value);
        }
    }
    let entries = topo
        .nodes
        .iter()
        .map(|m| ("node", m))
        .chain(topo.hosts.iter().map(|m| ("host", m)));
    for (kind, entry) in entries {
        let Some(machine) = &entry.machine else {
            continue;
        };
        if topo.machines_at.is_none() {
            diags.push(
                Diagnostic::error(
                    &machine.at,
                    format!(
                        "this {kind} is put on the machine `{}`, but the topology has no `machines:` list",
                        machine.value
                    ),
                )
                .help(format!(
                    "add a top-level `machines:` list, e.g. `machines: [{{name: {}, address: 10.0.0.1}}]`, or remove `machine` to run on one machine",
                    machine.value
                )),
            );
        } else if !known.contains(&machine.value.as_str()) {
            let help = match did_you_mean(&machine.value, &known) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => "`machines:` lists no valid machine".to_string(),
                None => format!(
                    "the machines are: {}; or leave `machine` out to have the {kind} spread",
                    known.join(", ")
                ),
            };
            diags.push(
                Diagnostic::error(
                    &machine.at,
                    format!("there is no machine named `{}`", machine.value),
                )
                .help(help),
            );
        }
    }
}

fn registry(topo: &Topology, diags: &mut Diagnostics) {
    let c = &topo.cluster;
    match (c.registry.value, &c.etcd) {
        (Registry::Etcd, None) => diags.push(
            Diagnostic::error(&c.registry.at, "`registry: etcd` needs `etcd.endpoints`, and `cluster` has no `etcd`")
                .help("add `etcd: {endpoints: [http://10.0.0.1:2379]}` to `cluster`, naming etcd's client URLs"),
        ),
        (Registry::Etcd, Some(etcd)) if etcd.listed == 0 => diags.push(
            Diagnostic::error(&etcd.at, "`etcd` has no `endpoints`, and `registry: etcd` needs at least one")
                .help("add `endpoints: [http://10.0.0.1:2379]` to `etcd`, naming etcd's client URLs"),
        ),
        (Registry::File, Some(etcd)) => diags.push(
            Diagnostic::error(
                &etcd.at,
                format!("`etcd` is set, but {} is `file`, so it would not be used", c.registry.named("registry")),
            )
            .help("add `registry: etcd` to `cluster` to keep the shared state in etcd, or remove `etcd`"),
        ),
        _ => {}
    }
    if topo.machines.len() > 1 && c.registry.value == Registry::File {
        if let Some(at) = &topo.machines_at {
            diags.push(
                Diagnostic::warning(
                    at,
                    format!(
                        "the testbed is spread over {} machines, but {} is `file`: each machine keeps its own copy of the leases, and no machine learns that another has gone",
                        topo.machines.len(),
                        c.registry.named("registry")
                    ),
                )
                .help("set `registry: etcd` and `etcd: {endpoints: [...]}` in `cluster` so that the machines share their state"),
            );
        }
    }
}
