//! Check declarations as written (`experiment-format.md`, "Checks"): the
//! `checks:` list of a topology file or of a file of its own, decoded with
//! the topology decoder's located errors (line, column, field path,
//! did-you-mean), every problem in one run. `check_names` then checks the
//! pods, nodes, hosts, services and controllers a check names against what
//! a topology or a running testbed's plan holds.

use crate::diag::{At, Diagnostics};
use crate::topology::decode::{at, Decoder, Obj};
use crate::topology::model::Sp;
use crate::topology::units::Duration as Written;
use crate::topology::yaml::{Node, Value};
use std::collections::HashMap;
use std::time::Duration;

mod known;
#[cfg(test)]
mod tests;
mod text;
mod types;

pub use types::{Check, CheckKind, Endpoint, Expect, Level, Port};

pub(crate) use known::endpoint as check_endpoint;
pub use known::{check_names, Known};
pub(crate) use known::{KnownPod, KnownService};
pub use text::{parse_endpoint, parse_port, Problem};

/// How long an allow check is retried when `within` is not written.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(5);
/// How long a deny check must hold when `for` is not written.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(1);
/// The longest `within` or `for` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A decoded check and where its parts were written, for the messages of
/// `check_names`.
#[derive(Clone, Debug, PartialEq)]
pub struct Declared {
    /// The check.
    pub check: Check,
    /// Its entry in the list.
    pub at: At,
    /// Its `from` value.
    pub from: At,
    /// Its `to` value.
    pub to: At,
    /// Its `port` value, if written.
    pub port: Option<At>,
}

/// The fields of a check entry.
const FIELDS: &[&str] = &[
    "name",
    "from",
    "to",
    "port",
    "expect",
    "within",
    "for",
    "body",
    "level",
    "matrix",
    "ignoreSelf",
    "expectTable",
];
/// The fields only a pair check has.
const PAIR_ONLY: &[&str] = &["from", "to", "port", "expect", "within", "for", "body"];
/// The fields only a matrix check has.
const MATRIX_ONLY: &[&str] = &["ignoreSelf", "expectTable"];
/// The selector forms of an endpoint.
const SELECTORS: &[&str] = &["pods", "rc", "allPods", "allNodes", "allHosts"];

/// Which side of a check an endpoint is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    From,
    To,
}

/// Reads a file of checks (`checks:` its only top-level key); `file` names
/// it in messages. With `known`, the names the checks use are checked too,
/// in the same run. Problems come back as `LoadError::Invalid`, rendered
/// like a topology's.
pub fn read_file(
    source: &str,
    file: &str,
    known: Option<&Known>,
) -> Result<Vec<Check>, crate::LoadError> {
    let mut diags = Diagnostics::default();
    let declared = match crate::topology::yaml::parse(source) {
        Ok(root) => decode_file(&root, &mut diags),
        Err(errors) => {
            for e in errors {
                diags.push(e);
            }
            Vec::new()
        }
    };
    if let Some(known) = known {
        check_names(&declared, known, &mut diags);
    }
    if diags.has_errors() {
        return Err(crate::LoadError::Invalid {
            file: file.to_string(),
            source_text: source.to_string(),
            diagnostics: diags.into_sorted(),
        });
    }
    Ok(declared.into_iter().map(|d| d.check).collect())
}

/// Decodes a parsed file of checks; problems go to `diags`.
pub fn decode_file(root: &Node, diags: &mut Diagnostics) -> Vec<Declared> {
    let mut d = Decoder::new(diags);
    if root.value == Value::Null {
        d.err(
            &at(root, ""),
            "the file is empty",
            "a checks file holds a `checks:` list, e.g. `checks: [{name: ping-web, from: pod client, to: pod web}]`",
        );
        return Vec::new();
    }
    let Some(obj) = d.obj(root, "", "a checks file", &["checks"]) else {
        return Vec::new();
    };
    if obj.get("checks").is_none() {
        d.err(
            &obj.at(),
            "a checks file has no `checks`, which is required",
            "add `checks:` with one check a line below it, each starting with `- `",
        );
    }
    d.checks_field(&obj)
}

impl Decoder<'_> {
    /// The `checks` list of `obj` (a topology or a checks file), names
    /// unique.
    pub(crate) fn checks_field(&mut self, obj: &Obj) -> Vec<Declared> {
        let Some((node, path)) = obj.get("checks") else {
            return Vec::new();
        };
        let mut out: Vec<Declared> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (n, p) in self.list(node, &path, "`checks`") {
            let Some(d) = self.check(n, &p) else {
                continue;
            };
            if let Some(line) = seen.get(&d.check.name) {
                self.err(
                    &d.at,
                    format!("a check named `{}` is already declared on line {line}", d.check.name),
                    "a check's name is its test case's name in every report: give each check its own",
                );
                continue;
            }
            seen.insert(d.check.name.clone(), d.at.pos.line);
            out.push(d);
        }
        out
    }

    /// One entry of `checks`.
    fn check(&mut self, node: &Node, path: &str) -> Option<Declared> {
        let obj = self.obj(node, path, "a check", FIELDS)?;
        let name = self
            .required(&obj, "name", "a check", "web-from-clients")
            .and_then(|(n, p)| self.name(n, &p, "the check's name", 63));
        let level = obj
            .get("level")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`level`",
                    &[("error", Level::Error), ("warning", Level::Warning)],
                )
            })
            .map_or(Level::Error, |l| l.value);
        let matrix = obj.get("matrix");
        let (only, what) = match matrix {
            Some(_) => (PAIR_ONLY, "a matrix check"),
            None => (MATRIX_ONLY, "a check without `matrix`"),
        };
        for key in only {
            if obj.get(key).is_some() {
                let help = match (matrix.is_some(), *key) {
                    (true, "from" | "to" | "port") => {
                        format!("a matrix's `{key}` goes inside `matrix:`, e.g. `matrix: {{from: {{allPods: true}}, to: {{allPods: true}}, port: tcp/80}}`")
                    }
                    (true, _) => "a matrix records what is reachable and compares it with `expectTable`; write a check without `matrix` for this".to_string(),
                    (false, _) => "only a matrix check (`matrix: {from, to, port}`) has it".to_string(),
                };
                self.err(
                    &obj.key_at(key),
                    format!("`{key}` is not a field of {what}"),
                    help,
                );
            }
        }
        let (kind, from, to, port) = match matrix {
            Some((m, mp)) => self.matrix(&obj, m, &mp)?,
            None => self.pair(&obj)?,
        };
        Some(Declared {
            check: Check {
                name: name?.value,
                kind,
                level,
            },
            at: obj.at(),
            from,
            to,
            port,
        })
    }

    /// The fields of a pair check.
    #[allow(clippy::type_complexity)]
    fn pair(&mut self, obj: &Obj) -> Option<(CheckKind, At, At, Option<At>)> {
        let from = self
            .required(obj, "from", "a check", "{allPods: true}")
            .and_then(|(n, p)| self.endpoint(n, &p, Side::From));
        let to = self
            .required(obj, "to", "a check", "pod web")
            .and_then(|(n, p)| self.endpoint(n, &p, Side::To));
        let port = obj.get("port").and_then(|(n, p)| self.check_port(n, &p));
        let expect = obj
            .get("expect")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`expect`",
                    &[
                        ("allow", Expect::Allow),
                        ("deny", Expect::Deny),
                        ("drop", Expect::Drop),
                        ("reject", Expect::Reject),
                    ],
                )
            })
            .map_or(Expect::Allow, |e| e.value);
        let allow = expect == Expect::Allow;
        let within = self.wait(
            obj,
            "within",
            allow,
            "deny, drop or reject checks hold for `for` instead; write `for: 2s`",
        );
        let hold = self.wait(
            obj,
            "for",
            !allow,
            "an allow check is retried until it passes; write `within: 10s` for how long",
        );
        let body = self.body(obj, port.as_ref(), allow);
        if let (Some(p), Some(t)) = (&port, &to) {
            self.port_fits(p, t);
        }
        let (from, to) = (from?, to?);
        Some((
            CheckKind::Pair {
                from: from.value,
                to: to.value,
                port: port.as_ref().map(|p| p.value.clone()),
                expect,
                within: within.unwrap_or(DEFAULT_WITHIN),
                hold: hold.unwrap_or(DEFAULT_HOLD),
                body,
            },
            from.at,
            to.at,
            port.map(|p| p.at),
        ))
    }

    /// A matrix check: `matrix: {from, to, port}`, `ignoreSelf`,
    /// `expectTable`.
    #[allow(clippy::type_complexity)]
    fn matrix(
        &mut self,
        obj: &Obj,
        node: &Node,
        path: &str,
    ) -> Option<(CheckKind, At, At, Option<At>)> {
        let ignore_self = obj
            .get("ignoreSelf")
            .and_then(|(n, p)| self.boolean(n, &p, "`ignoreSelf`"))
            .unwrap_or(false);
        let expect_table = obj
            .get("expectTable")
            .and_then(|(n, p)| self.expect_table(n, &p));
        let m = self.obj(node, path, "`matrix`", &["from", "to", "port"])?;
        let from = self
            .required(&m, "from", "`matrix`", "{allPods: true}")
            .and_then(|(n, p)| self.endpoint(n, &p, Side::From));
        let to = self
            .required(&m, "to", "`matrix`", "{allPods: true}")
            .and_then(|(n, p)| self.endpoint(n, &p, Side::To));
        let port = m.get("port").and_then(|(n, p)| self.check_port(n, &p));
        if let (Some(p), Some(t)) = (&port, &to) {
            self.port_fits(p, t);
        }
        let (from, to) = (from?, to?);
        Some((
            CheckKind::Matrix {
                from: from.value,
                to: to.value,
                port: port.as_ref().map(|p| p.value.clone()),
                ignore_self,
                expect_table,
            },
            from.at,
            to.at,
            port.map(|p| p.at),
        ))
    }

    /// `within` or `for`: a duration up to `MAX_WAIT`, only where `fits`.
    fn wait(&mut self, obj: &Obj, key: &str, fits: bool, misplaced: &str) -> Option<Duration> {
        let (n, p) = obj.get(key)?;
        if !fits {
            self.err(
                &obj.key_at(key),
                format!("`{key}` does not apply to this check's `expect`"),
                misplaced,
            );
            return None;
        }
        let d = self.parsed::<Written>(
            n,
            &p,
            &format!("`{key}`"),
            "write a duration such as `500ms` or `10s`",
        )?;
        let d = Sp::new(Duration::from_micros(d.value.0), d.at);
        if d.value > MAX_WAIT {
            self.err(
                &d.at,
                format!("`{key}` is longer than {}s", MAX_WAIT.as_secs()),
                "a check waits at most an hour",
            );
            return None;
        }
        Some(d.value)
    }

    /// `body`: HTTP allow checks only.
    fn body(&mut self, obj: &Obj, port: Option<&Sp<Port>>, allow: bool) -> Option<String> {
        let (n, p) = obj.get("body")?;
        let text = self.text(n, &p, "`body`")?;
        let http = matches!(port.map(|p| &p.value), Some(Port::Http { .. }));
        if !http || !allow {
            self.err(
                &obj.key_at("body"),
                "`body` applies only to an allow check on an `http/N` port",
                "write e.g. `port: http/80` and `expect: allow`, or leave out `body`",
            );
            return None;
        }
        Some(text.value)
    }

    /// A plain `true` or `false`.
    pub(crate) fn boolean(&mut self, node: &Node, path: &str, what: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar { text, plain: true } if text == "true" => Some(true),
            Value::Scalar { text, plain: true } if text == "false" => Some(false),
            other => {
                self.err(
                    &at(node, path),
                    format!(
                        "{what} must be true or false, but this is {}",
                        other.describe()
                    ),
                    "write `true` or `false`, without quotes",
                );
                None
            }
        }
    }

    /// `expectTable`: lines of '.' (reachable) and 'X' (not), spaces
    /// ignored, all of one length.
    fn expect_table(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let text = self.text(node, path, "`expectTable`")?;
        let rows: Vec<String> = text
            .value
            .lines()
            .map(|l| l.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .filter(|l| !l.is_empty())
            .collect();
        let help = "write one line per source, one character per target: `.` reachable, `X` not, e.g. `expectTable: |` then lines like `.X.`";
        if let Some(bad) = rows
            .iter()
            .flat_map(|r| r.chars())
            .find(|c| !matches!(c, '.' | 'X'))
        {
            self.err(
                &text.at,
                format!("`expectTable` holds `{bad}`, which is neither `.` nor `X`"),
                help,
            );
            return None;
        }
        if rows.is_empty() {
            self.err(&text.at, "`expectTable` is empty", help);
            return None;
        }
        let width = rows[0].len();
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            self.err(
                &text.at,
                format!(
                    "row {} of `expectTable` has {} columns, but row 1 has {width}",
                    i + 1,
                    r.len()
                ),
                "every row has one character per target",
            );
            return None;
        }
        Some(rows)
    }

    /// `port`: `tcp/N`, `udp/N`, `http/N[/path]` or `icmp`.
    fn check_port(&mut self, node: &Node, path: &str) -> Option<Sp<Port>> {
        if let Value::Scalar { text, plain: true } = &node.value {
            if let Ok(n) = text.parse::<i64>() {
                self.err(
                    &at(node, path),
                    format!("`port` {n} does not say what to probe"),
                    format!("write `tcp/{n}`, `udp/{n}` or `http/{n}`"),
                );
                return None;
            }
        }
        let text = self.text(node, path, "`port`")?;
        match parse_port(&text.value) {
            Ok(p) => Some(Sp::new(p, text.at)),
            Err((msg, help)) => {
                self.err(&text.at, msg, help);
                None
            }
        }
    }

    /// A port that the target can take: `icmp` has no node port.
    fn port_fits(&mut self, port: &Sp<Port>, to: &Sp<Endpoint>) {
        if port.value == Port::Icmp && matches!(to.value, Endpoint::NodePort { .. }) {
            self.err(
                &port.at,
                "a `nodePort` target is probed on a service port, not with `icmp`",
                "write the service's port, e.g. `tcp/80`, or leave out `port` for its first one",
            );
        }
    }

    /// `from` (`to` false) or `to` (`to` true) of another declaration
    /// than a check (an experiment's workload), decoded as a check's.
    pub(crate) fn endpoint_of(
        &mut self,
        node: &Node,
        path: &str,
        to: bool,
    ) -> Option<Sp<Endpoint>> {
        self.endpoint(node, path, if to { Side::To } else { Side::From })
    }

    /// `from` or `to`: a string form or a selector.
    fn endpoint(&mut self, node: &Node, path: &str, side: Side) -> Option<Sp<Endpoint>> {
        let e = if let Value::Map(_) = node.value {
            self.selector(node, path)?
        } else {
            let text = self.text(node, path, &format!("`{}`", side_name(side)))?;
            match parse_endpoint(&text.value) {
                Ok(e) => Sp::new(e, text.at),
                Err((msg, help)) => {
                    self.err(&text.at, msg, help);
                    return None;
                }
            }
        };
        let to_only = matches!(
            e.value,
            Endpoint::Service { .. }
                | Endpoint::NodePort { .. }
                | Endpoint::External { .. }
                | Endpoint::Address(_)
        );
        if side == Side::From && to_only {
            self.err(
                &e.at,
                "a service or an address cannot send: it can only be in `to`",
                "`from` takes `pod NAME`, `host NAME`, `node NAME` or a selector such as `{pods: {app: client}}`",
            );
            return None;
        }
        Some(e)
    }

    /// `{pods: {LABELS}}`, `{rc: NAME}`, `{allPods: true}`, ...
    fn selector(&mut self, node: &Node, path: &str) -> Option<Sp<Endpoint>> {
        let obj = self.obj(node, path, "a selector", SELECTORS)?;
        let here = obj.at();
        if obj.entries.len() != 1 {
            self.err(
                &here,
                format!("a selector has exactly one field, but this has {}", obj.entries.len()),
                "write one of `{pods: {app: web}}`, `{rc: NAME}`, `{allPods: true}`, `{allNodes: true}`, `{allHosts: true}`",
            );
            return None;
        }
        let (key, value) = &obj.entries[0];
        let vpath = format!("{path}.{}", key.name);
        let e = match key.name.as_str() {
            "pods" => {
                let labels = self.labels(&obj, "pods", "`pods`");
                let written = matches!(&value.value, Value::Map(m) if !m.is_empty());
                if labels.map.is_empty()
                    && !written
                    && matches!(value.value, Value::Map(_) | Value::Null)
                {
                    self.err(
                        &at(value, &vpath),
                        "`pods` selects by no label",
                        "write labels the pods have, e.g. `{pods: {app: web}}`, or `{allPods: true}` for every pod",
                    );
                    return None;
                }
                Endpoint::Pods(labels.map)
            }
            "rc" => Endpoint::Rc(self.name(value, &vpath, "`rc`", 63)?.value),
            word @ ("allPods" | "allNodes" | "allHosts") => {
                if !self.boolean(value, &vpath, &format!("`{word}`"))? {
                    self.err(
                        &at(value, &vpath),
                        format!("`{word}: false` selects nothing"),
                        format!("write `{{{word}: true}}`"),
                    );
                    return None;
                }
                match word {
                    "allPods" => Endpoint::AllPods,
                    "allNodes" => Endpoint::AllNodes,
                    _ => Endpoint::AllHosts,
                }
            }
            // An unknown field, already reported by `obj`.
            _ => return None,
        };
        Some(Sp::new(e, here))
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::From => "from",
        Side::To => "to",
    }
}
