//! The hosts file every pod and host gets as `/etc/hosts`: loopback, the
//! asker's own name when nothing else claims it, bare names as seen from its
//! namespace (they win, as the first entry for a name does), then qualified
//! names. Many pods share one text (all pods of a namespace whose own name
//! is claimed by a record), so [`HostsFiles`] builds each distinct text once:
//! a cluster of n pods costs O(n) work per distinct text, not O(n) per pod.

use crate::plan::Plan;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Hosts files of one plan, each distinct text built once.
pub struct HostsFiles<'p> {
    plan: &'p Plan,
    qualified: HashSet<&'p str>,
    bare: HashMap<&'p str, HashSet<&'p str>>,
    texts: HashMap<(String, Option<String>), Arc<str>>,
}

impl<'p> HostsFiles<'p> {
    /// Indexes `plan`'s names.
    pub fn new(plan: &'p Plan) -> HostsFiles<'p> {
        HostsFiles {
            plan,
            qualified: plan.dns.records.iter().map(|r| r.name.as_str()).collect(),
            bare: plan
                .dns
                .bare
                .iter()
                .map(|(ns, l)| (ns.as_str(), l.iter().map(|r| r.name.as_str()).collect()))
                .collect(),
            texts: HashMap::new(),
        }
    }

    /// The hosts file of a pod or host named `hostname` in `namespace`
    /// (machines name theirs `default`) with address `own_ip`.
    pub fn text(&mut self, namespace: &str, hostname: &str, own_ip: Option<Ipv4Addr>) -> Arc<str> {
        let claimed = self
            .bare
            .get(namespace)
            .is_some_and(|names| names.contains(hostname))
            || self.qualified.contains(hostname);
        let own = (!claimed).then(|| {
            let ip = own_ip.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
            format!("{ip}\t{hostname}\n")
        });
        let key = (namespace.to_string(), own);
        if let Some(t) = self.texts.get(&key) {
            return t.clone();
        }
        let text: Arc<str> = render(self.plan, namespace, key.1.as_deref()).into();
        self.texts.insert(key, text.clone());
        text
    }
}

fn render(plan: &Plan, namespace: &str, own: Option<&str>) -> String {
    let mut out = String::from("# written by testbed from its plan\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str(own.unwrap_or(""));
    for r in plan.dns.bare.get(namespace).into_iter().flatten() {
        let _ = writeln!(out, "{}\t{}", r.ip, r.name);
    }
    for r in &plan.dns.records {
        let _ = writeln!(out, "{}\t{}", r.ip, r.name);
    }
    out
}

impl Plan {
    /// The hosts file of one pod or host (see [`HostsFiles`] for many).
    pub fn hosts_file(&self, namespace: &str, hostname: &str, own_ip: Option<Ipv4Addr>) -> String {
        HostsFiles::new(self)
            .text(namespace, hostname, own_ip)
            .to_string()
    }
}
