//! Decoding an experiment file (its own YAML document) with the topology
//! decoder's located errors: file, line, column, field path, help and "did
//! you mean" for unknown fields, every problem in one run. The topology is
//! read and loaded, each parameter value is applied to it and planned
//! (`params`), and the names the timeline uses are checked against it.
//! Workload defaults: `rate` 10/s, `start` 0s, `duration` 10s, `timeout` 1s,
//! `streams` 1; `port` none (a service's first port).

use super::{params, Experiment, Param, Workload, WorkloadKind};
use crate::check::spec::{check_endpoint, Known};
use crate::diag::{At, Diagnostic, Diagnostics};
use crate::topology::decode::{at, Decoder, Obj};
use crate::topology::model::Sp;
use crate::topology::units::Duration as Written;
use crate::topology::yaml::{Node, Value};
use crate::{LoadError, Loaded};
use std::path::Path;
use std::time::Duration;

#[cfg(test)]
pub(crate) mod tests;
mod timeline;

/// `rate` when not written, per second.
pub const DEFAULT_RATE: u32 = 10;
/// The highest `rate` accepted, per second.
pub const MAX_RATE: u32 = 100_000;
/// `duration` when not written.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// `timeout` when not written.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `start`, `duration`, `at` or `for` accepted.
pub const MAX_TIME: Duration = Duration::from_secs(24 * 3600);
/// The most `repeat`.
pub const MAX_REPEAT: i64 = 1000;
/// The most `streams` of a tcpStream workload.
pub const MAX_STREAMS: i64 = 1000;

const TOP: &[&str] = &[
    "experiment",
    "topology",
    "seed",
    "repeat",
    "params",
    "shuffle",
    "workloads",
    "timeline",
];
const WORKLOAD: &[&str] = &[
    "name", "kind", "from", "to", "port", "rate", "streams", "start", "duration", "timeout",
];
const KINDS: &[(&str, WorkloadKind)] = &[
    ("http", WorkloadKind::Http),
    ("tcpConnect", WorkloadKind::TcpConnect),
    ("tcpStream", WorkloadKind::TcpStream),
    ("udpEcho", WorkloadKind::UdpEcho),
    ("ping", WorkloadKind::Ping),
];

/// Reads the experiment in `path` and the topology it names. Problems come
/// back as `LoadError::Invalid` against the experiment file.
pub fn read(path: &Path) -> Result<Experiment, LoadError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: file.clone(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    read_str(&file, &source, &|p| {
        crate::load(&dir.join(p)).map(|l| (dir.join(p), l))
    })
}

/// How the topology a file names is loaded (a path relative to the file).
pub type LoadTopology<'a> = dyn Fn(&str) -> Result<(std::path::PathBuf, Loaded), LoadError> + 'a;

/// Decodes experiment text named `file`; `load` reads its topology.
pub fn read_str(file: &str, source: &str, load: &LoadTopology) -> Result<Experiment, LoadError> {
    let mut diags = Diagnostics::default();
    let exp = match crate::topology::yaml::parse(source) {
        Ok(root) => decode(&root, load, &mut diags),
        Err(errors) => {
            for e in errors {
                diags.push(e);
            }
            None
        }
    };
    match exp {
        Some(exp) if !diags.has_errors() => Ok(exp),
        _ => Err(LoadError::Invalid {
            file: file.to_string(),
            source_text: source.to_string(),
            diagnostics: diags.into_sorted(),
        }),
    }
}

/// Decodes a parsed experiment file; problems go to `diags`.
pub fn decode(root: &Node, load: &LoadTopology, diags: &mut Diagnostics) -> Option<Experiment> {
    let mut d = Decoder::new(diags);
    if root.value == Value::Null {
        d.err(
            &at(root, ""),
            "the file is empty",
            "an experiment needs at least `experiment:`, `topology:` and `workloads:`; see topologies/experiments/failover.yaml",
        );
        return None;
    }
    let obj = d.obj(root, "", "an experiment", TOP)?;
    let name = d
        .required(&obj, "experiment", "an experiment", "failover")
        .and_then(|(n, p)| d.name(n, &p, "the experiment's name", 63));
    let topology = d
        .required(&obj, "topology", "an experiment", "../web.yaml")
        .and_then(|(n, p)| topology(&mut d, n, &p, load));
    let seed = obj
        .get("seed")
        .and_then(|(n, p)| seed(&mut d, n, &p))
        .unwrap_or(0);
    let repeat = obj
        .get("repeat")
        .and_then(|(n, p)| {
            d.int(
                n,
                &p,
                "`repeat`",
                1,
                MAX_REPEAT,
                "write how often each combination runs, from 1 to 1000, e.g. `repeat: 3`",
            )
        })
        .map_or(1, |r| r.value as u32);
    let shuffle = obj
        .get("shuffle")
        .and_then(|(n, p)| d.boolean(n, &p, "`shuffle`"))
        .unwrap_or(true);
    let params = match (&topology, obj.get("params")) {
        (Some((_, loaded)), Some((n, p))) => params_field(&mut d, n, &p, loaded),
        _ => Vec::new(),
    };
    let known = topology
        .as_ref()
        .map(|(_, l)| crate::check::spec::Known::of_topology(&l.topology));
    let workloads = workloads(&mut d, &obj, known.as_ref());
    let timeline = match &topology {
        Some((_, loaded)) => timeline::timeline(&mut d, &obj, loaded),
        None => Vec::new(),
    };
    let (topology, loaded) = topology?;
    Some(Experiment {
        name: name?.value,
        topology,
        topology_source: loaded.source,
        seed,
        repeat,
        params,
        shuffle,
        workloads,
        timeline,
    })
}

/// `topology`: a file relative to the experiment's, loaded; its problems
/// are one error here.
fn topology(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    load: &LoadTopology,
) -> Option<(std::path::PathBuf, Loaded)> {
    let text = d.text(node, path, "`topology`")?;
    match load(&text.value) {
        Ok(l) => Some(l),
        Err(e) => {
            let n = match &e {
                LoadError::Invalid { diagnostics, .. } => {
                    diagnostics.iter().filter(|d| d.is_error()).count()
                }
                LoadError::Read { .. } | LoadError::Share(_) => 1,
            };
            d.err(
                &text.at,
                format!("the topology `{}` is not valid ({n} problem(s)); the first: {}", text.value, params::first_problem(&e)),
                "the path is relative to the experiment file; run `testbed validate` on the topology to see every problem",
            );
            None
        }
    }
}

/// `seed`: a whole number from 0 to 2^64 - 1.
fn seed(d: &mut Decoder, n: &Node, p: &str) -> Option<u64> {
    if let Value::Scalar { text, plain: true } = &n.value {
        if let Ok(v) = text.parse::<u64>() {
            return Some(v);
        }
    }
    d.err(
        &at(n, p),
        format!(
            "`seed` must be a whole number from 0 to {}, but this is {}",
            u64::MAX,
            n.value.describe()
        ),
        "write e.g. `seed: 7`; repetition r uses seed + r",
    );
    None
}

/// `params`: topology field path -> non-empty list of values, each of which
/// must give a valid topology.
fn params_field(d: &mut Decoder, node: &Node, path: &str, base: &Loaded) -> Vec<Param> {
    let Value::Map(entries) = &node.value else {
        if node.value != Value::Null {
            d.err(
                &at(node, path),
                format!(
                    "`params` must be a mapping of field paths to lists of values, but this is {}",
                    node.value.describe()
                ),
                "write e.g. `params: {cluster.proxy: [iptables, nftables]}`",
            );
        }
        return Vec::new();
    };
    let mut out: Vec<Param> = Vec::new();
    for (key, list) in entries {
        let kpath = format!("{path}.{}", key.name);
        let kat = At::new(key.pos, kpath.clone());
        let param = Param {
            path: key.name.clone(),
            values: Vec::new(),
        };
        if let Some(other) = out.iter().find(|o| o.short() == param.short()) {
            d.err(
                &kat,
                format!(
                    "`{}` and `{}` both end in `{}`, which names the value in a combination's name",
                    other.path,
                    key.name,
                    param.short()
                ),
                "vary only one of them",
            );
            continue;
        }
        let items = d.list(list, &kpath, &format!("`params.{}`", key.name));
        if items.is_empty() {
            d.err(
                &at(list, &kpath),
                format!("`{}` has no values", key.name),
                "write a list of values, e.g. `[iptables, nftables]`",
            );
            continue;
        }
        let mut values = Vec::new();
        for (n, p) in items {
            let Some(v) = d.text(n, &p, "a parameter value") else {
                continue;
            };
            match value_fits(d, &key.name, &kat, &v, base) {
                Fits::Yes => {}
                Fits::No => continue,
                Fits::UnknownPath => break,
            }
            values.push(v.value);
        }
        out.push(Param { values, ..param });
    }
    out
}

/// Whether a parameter's value makes a valid topology.
enum Fits {
    Yes,
    No,
    /// The path is no field of the topology (reported once).
    UnknownPath,
}

/// Applies `path: value` to the topology and plans it; problems are
/// reported at the value, or at the path (`kat`) when it names no field.
fn value_fits(d: &mut Decoder, path: &str, kat: &At, v: &Sp<String>, base: &Loaded) -> Fits {
    let Err(e) = params::load_with("", &base.source, &[(path, &v.value)]) else {
        return Fits::Yes;
    };
    let unknown = match &e {
        LoadError::Invalid { diagnostics, .. } => diagnostics
            .iter()
            .find(|g| g.path == path && g.message.starts_with("unknown field")),
        LoadError::Read { .. } | LoadError::Share(_) => None,
    };
    if let Some(u) = unknown {
        d.diags.push(
            Diagnostic::error(
                kat,
                format!("`{path}` is not a field of the topology: {}", u.message),
            )
            .help(u.help.clone().unwrap_or_default()),
        );
        return Fits::UnknownPath;
    }
    d.err(
        &v.at,
        format!(
            "`{path}: {}` does not make a valid topology: {}",
            v.value,
            params::first_problem(&e)
        ),
        "every value of a parameter must be one the topology file accepts for that field",
    );
    Fits::No
}

/// `workloads`: names unique.
fn workloads(d: &mut Decoder, obj: &Obj, known: Option<&Known>) -> Vec<Workload> {
    let Some((node, path)) = obj.get("workloads") else {
        return Vec::new();
    };
    let mut out: Vec<Workload> = Vec::new();
    for (n, p) in d.list(node, &path, "`workloads`") {
        let Some(w) = workload(d, n, &p, known) else {
            continue;
        };
        if out.iter().any(|o| o.name == w.name) {
            d.err(
                &at(n, &p),
                format!("a workload named `{}` is already declared", w.name),
                "give each workload its own name: it names its samples",
            );
            continue;
        }
        out.push(w);
    }
    out
}

/// One workload; with `known`, the names its endpoints use are checked.
fn workload(d: &mut Decoder, node: &Node, path: &str, known: Option<&Known>) -> Option<Workload> {
    let obj = d.obj(node, path, "a workload", WORKLOAD)?;
    let name = d
        .required(&obj, "name", "a workload", "http")
        .and_then(|(n, p)| d.name(n, &p, "the workload's name", 63));
    let kind = d
        .required(&obj, "kind", "a workload", "http")
        .and_then(|(n, p)| d.choice(n, &p, "`kind`", KINDS));
    let from = d
        .required(&obj, "from", "a workload", "pod toolbox")
        .and_then(|(n, p)| d.endpoint_of(n, &p, false));
    let to = d
        .required(&obj, "to", "a workload", "service web.shop")
        .and_then(|(n, p)| d.endpoint_of(n, &p, true));
    if let Some(known) = known {
        for e in [&from, &to].into_iter().flatten() {
            check_endpoint(&e.value, &e.at, known, d.diags);
        }
    }
    let port = obj.get("port").and_then(|(n, p)| d.port(n, &p, "`port`"));
    let rate = obj.get("rate").and_then(|(n, p)| rate(d, n, &p));
    let streams = obj.get("streams").and_then(|(n, p)| {
        d.int(
            n,
            &p,
            "`streams`",
            1,
            MAX_STREAMS,
            "write how many streams are kept open, from 1 to 1000",
        )
    });
    let kind = kind?;
    if let (Some(p), WorkloadKind::Ping) = (&port, kind.value) {
        d.err(&p.at, "a `ping` workload has no port", "leave out `port`");
    }
    if let (Some(s), false) = (&streams, kind.value == WorkloadKind::TcpStream) {
        d.err(
            &s.at,
            "`streams` applies only to a `tcpStream` workload",
            "leave out `streams`, or write `kind: tcpStream`",
        );
    }
    let start = time(d, &obj, "start").unwrap_or_default();
    let duration = time(d, &obj, "duration").unwrap_or(DEFAULT_DURATION);
    let timeout = time(d, &obj, "timeout").unwrap_or(DEFAULT_TIMEOUT);
    Some(Workload {
        name: name?.value,
        kind: kind.value,
        from: from?.value,
        to: to?.value,
        port: port.map(|p| p.value),
        rate: rate.unwrap_or(DEFAULT_RATE),
        streams: streams.map_or(1, |s| s.value as u32),
        start,
        duration,
        timeout,
    })
}

/// `rate`: `N/s`, 1 to `MAX_RATE`.
fn rate(d: &mut Decoder, node: &Node, path: &str) -> Option<u32> {
    let text = d.text(node, path, "`rate`")?;
    let n = text
        .value
        .trim()
        .strip_suffix("/s")
        .and_then(|n| n.trim().parse::<u32>().ok());
    match n {
        Some(n) if (1..=MAX_RATE).contains(&n) => Some(n),
        _ => {
            d.err(
                &text.at,
                format!(
                    "`rate` `{}` is not a number of sends per second from 1 to {MAX_RATE}",
                    text.value
                ),
                "write e.g. `rate: 200/s`",
            );
            None
        }
    }
}

/// A duration field of `obj` up to `MAX_TIME`, if written.
pub(crate) fn time(d: &mut Decoder, obj: &Obj, key: &str) -> Option<Duration> {
    let (n, p) = obj.get(key)?;
    duration(d, n, &p, &format!("`{key}`"))
}

/// A duration up to `MAX_TIME`.
pub(crate) fn duration(d: &mut Decoder, n: &Node, p: &str, what: &str) -> Option<Duration> {
    let w: Sp<Written> = d.parsed(n, p, what, "write a duration such as `500ms` or `10s`")?;
    let v = Duration::from_micros(w.value.0);
    if v > MAX_TIME {
        d.err(
            &w.at,
            format!("{what} is longer than a day"),
            "an experiment's times are at most a day, e.g. `30s`",
        );
        return None;
    }
    Some(v)
}
