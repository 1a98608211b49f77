//! The text form of [`Changes`]: one `+`/`-`/`~` line per object, as
//! `testbed apply` prints it before it changes anything.

use super::refuse::spelled;
use super::{Changed, Changes, LinkChange, MachineBrief, MachineKind, Section};
use crate::plan::types::LinkPlan;
use proxy::ServiceType;
use std::fmt;

impl LinkChange {
    /// What differs, one parameter after the other: `delay 10ms → 20ms,
    /// loss none → 1%`.
    pub fn describe(&self) -> String {
        let none = LinkPlan::default();
        let (a, b) = (
            self.old.as_ref().unwrap_or(&none),
            self.new.as_ref().unwrap_or(&none),
        );
        let params = [
            ("delay", text(a.delay), text(b.delay)),
            ("jitter", text(a.jitter), text(b.jitter)),
            ("loss", text(a.loss), text(b.loss)),
            ("duplicate", text(a.duplicate), text(b.duplicate)),
            ("reorder", text(a.reorder), text(b.reorder)),
            ("rate", text(a.rate), text(b.rate)),
        ];
        params
            .into_iter()
            .filter(|(_, x, y)| x != y)
            .map(|(name, x, y)| format!("{name} {x} → {y}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An impairment as the file spells it, `none` when absent.
fn text<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

impl Changes {
    /// The text form, one line per object, `+` added, `-` removed, `~`
    /// changed: nodes, hosts, pods, then services.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        self.machines(&mut out, MachineKind::Node, &self.nodes);
        self.machines(&mut out, MachineKind::Host, &self.hosts);
        for p in &self.pods.added {
            let ip = p.ip.map(|ip| format!(" {ip}")).unwrap_or_default();
            out.push(format!(
                "+ pod {}/{} on {}{ip}",
                p.namespace, p.name, p.node
            ));
        }
        for p in &self.pods.removed {
            out.push(format!("- pod {}/{}", p.namespace, p.name));
        }
        changed_lines(&mut out, "pod", &self.pods.changed);
        for s in &self.services.added {
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol))
                .collect();
            let kind = match s.kind {
                ServiceType::ClusterIP => String::new(),
                other => format!(" ({})", spelled(&other)),
            };
            out.push(format!(
                "+ service {}/{} {}:{}{kind}",
                s.namespace,
                s.name,
                s.cluster_ip,
                ports.join(",")
            ));
        }
        for s in &self.services.removed {
            out.push(format!("- service {}/{}", s.namespace, s.name));
        }
        changed_lines(&mut out, "service", &self.services.changed);
        out.into_iter().map(|l| l + "\n").collect()
    }

    fn machines<F: fmt::Display + PartialEq + Copy>(
        &self,
        out: &mut Vec<String>,
        kind: MachineKind,
        section: &Section<MachineBrief, F>,
    ) {
        for m in &section.added {
            out.push(format!("+ {kind} {} {}", m.name, m.ip));
        }
        for m in &section.removed {
            out.push(format!("- {kind} {}", m.name));
        }
        for c in &section.changed {
            let mut parts: Vec<String> = c
                .fields
                .iter()
                .map(ToString::to_string)
                .filter(|f| f != "link")
                .collect();
            let link = self
                .links
                .iter()
                .find(|l| l.kind == kind && l.name == c.name);
            if let Some(l) = link {
                parts.push(format!("link {}", l.describe()));
            }
            out.push(format!("~ {kind} {}: {}", c.name, parts.join(", ")));
        }
    }
}

fn changed_lines<F: fmt::Display>(out: &mut Vec<String>, what: &str, changed: &[Changed<F>]) {
    for c in changed {
        let fields: Vec<String> = c.fields.iter().map(ToString::to_string).collect();
        let ns = c
            .namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        out.push(format!("~ {what} {ns}{}: {}", c.name, fields.join(", ")));
    }
}
