//! LAN partitions: machines that cannot reach each other over the LAN, both
//! directions, made inside the fabric namespace only. The LAN bridge `lan0`
//! has one port per node and host (the plan's `uplink.peer.name`); a cut
//! between two ports drops every frame forwarded from one to the other (ARP
//! included, so neither side even resolves the other), in an nftables table
//! of the `bridge` family that the testbed owns ([`TABLE`]). Each call
//! replaces the whole table in one `nft -f` transaction; no cut removes it.
//! Nothing outside the fabric namespace is touched (no br_netfilter, no
//! host-wide sysctl).

use crate::kernel::netns::{Netns, NetnsError};
use std::collections::BTreeSet;
use std::fmt::Write;

/// The table of the `bridge` family holding the cuts.
pub const TABLE: &str = "testbed_faults";

/// Why a partition could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// A port name that is not an interface name.
    #[error("`{0}` is not an interface name (1-15 characters of letters, digits, `-`, `_`, `.`)")]
    BadPort(String),
    /// A port cut from itself.
    #[error("a port cannot be cut from itself (`{0}`)")]
    SamePort(String),
    /// The fabric namespace could not be opened.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// nft is missing or failed.
    #[error("setting the LAN partition in `{netns}`: {message}")]
    Nft {
        /// The fabric namespace.
        netns: String,
        /// What went wrong.
        message: String,
    },
}

fn check(port: &str) -> Result<(), PartitionError> {
    let ok = (1..=15).contains(&port.len())
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PartitionError::BadPort(port.to_string()))
    }
}

/// The `nft -f` script that makes the cuts between each pair of ports in
/// `cuts` (both directions; each pair once, in a fixed order), replacing
/// whatever the table held: it is created (a no-op if it exists), deleted,
/// and made again in one transaction. Without cuts, only deleted. Every
/// name is checked first: nothing else reaches the script.
pub fn ruleset(cuts: &[(String, String)]) -> Result<String, PartitionError> {
    let mut pairs = BTreeSet::new();
    for (a, b) in cuts {
        check(a)?;
        check(b)?;
        if a == b {
            return Err(PartitionError::SamePort(a.clone()));
        }
        pairs.insert((a.as_str(), b.as_str()));
        pairs.insert((b.as_str(), a.as_str()));
    }
    let mut s = format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n");
    if pairs.is_empty() {
        return Ok(s);
    }
    let elements: Vec<String> = pairs
        .iter()
        .map(|(from, to)| format!("\"{from}\" . \"{to}\""))
        .collect();
    let _ = write!(
        s,
        "table bridge {TABLE} {{\n\
         \tset cuts {{\n\
         \t\ttype ifname . ifname\n\
         \t\telements = {{ {} }}\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tiifname . oifname @cuts drop\n\
         \t}}\n\
         }}\n",
        elements.join(", ")
    );
    Ok(s)
}

/// Makes exactly the cuts `cuts` (pairs of LAN bridge ports) in the fabric
/// namespace `fabric_netns`, replacing those made before; none removes the
/// table.
pub fn set_cuts(fabric_netns: &str, cuts: &[(String, String)]) -> Result<(), PartitionError> {
    let script = ruleset(cuts)?;
    let ns = Netns::open(fabric_netns)?;
    let fail = |message: String| PartitionError::Nft {
        netns: fabric_netns.to_string(),
        message,
    };
    let out = ns
        .command("nft", &["-f", "-"], Some(&script))
        .map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                "nft is not installed (Debian: apt-get install nftables)".into()
            } else {
                e.to_string()
            })
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
