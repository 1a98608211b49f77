//! One run's files: `run.json`, `samples.csv` and `plots/*.svg` written by
//! [`write_run`] and read back by [`read_run`] and [`read_samples`]; and the
//! names of the layout ([`run_id`], [`combination_dir`]).

use super::{plots, stats, ResultsError, RunInput, RunRecord, RUN_SCHEMA};
use crate::traffic::{Sample, SampleOutcome};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `samples.csv`'s header.
pub const CSV_HEADER: &str = "workload,source,sendUs,sentUs,latencyUs,outcome,bytes,backend";

/// Longest combination directory name, bytes (below the 255 of a path
/// component, leaving room for editors' temporary names).
pub const MAX_DIR_LEN: usize = 200;

/// Computes the run's figures and writes `run.json`, `samples.csv` and
/// `plots/<workload>.svg` into `dir` (which exists). Returns the record.
pub fn write_run(dir: &Path, mut input: RunInput) -> Result<RunRecord, ResultsError> {
    stats::sort_samples(&mut input.samples);
    let record = record(&input);
    write(
        &dir.join("samples.csv"),
        samples_csv(&input.samples).as_bytes(),
    )?;
    write(&dir.join("run.json"), pretty(&record).as_bytes())?;
    let plots_dir = dir.join("plots");
    create_dir(&plots_dir)?;
    for w in &input.workloads {
        let path = plots_dir.join(format!("{}.svg", w.name));
        let svg = plots::run_plot(w, &input.samples, &record.faults).map_err(|message| {
            ResultsError::Plot {
                path: path.clone(),
                message,
            }
        })?;
        write(&path, svg.as_bytes())?;
    }
    Ok(record)
}

/// The record of a run whose samples are sorted.
fn record(input: &RunInput) -> RunRecord {
    let params = input
        .combination
        .params
        .iter()
        .map(|s| (s.path.clone(), serde_json::Value::String(s.value.clone())))
        .collect();
    RunRecord {
        schema: RUN_SCHEMA.to_string(),
        experiment: input.experiment.clone(),
        combination: input.combination.name.clone(),
        params,
        rep: input.rep,
        seed: input.seed,
        meta: input.meta.clone(),
        workloads: input
            .workloads
            .iter()
            .map(|w| stats::summarize(w, &input.samples))
            .collect(),
        faults: stats::faults(&input.faults, &input.samples),
        checks: input.checks.clone(),
        execs: input.execs.clone(),
        seeded: input.seeded.clone(),
        verified: input.verified.clone(),
        interrupted: input.interrupted,
    }
}

/// Reads `dir/run.json`.
pub fn read_run(dir: &Path) -> Result<RunRecord, ResultsError> {
    let path = dir.join("run.json");
    let record: RunRecord = read_json(&path, RUN_SCHEMA)?;
    Ok(record)
}

/// Reads the JSON file `path` of schema `schema` (checked first, so that a
/// file of another kind gets a clear message).
pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    schema: &'static str,
) -> Result<T, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json = |source| ResultsError::Json {
        path: path.to_path_buf(),
        source,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
    let found = v.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    if found != schema {
        return Err(ResultsError::Schema {
            path: path.to_path_buf(),
            found: found.to_string(),
            expected: schema,
        });
    }
    serde_json::from_value(v).map_err(json)
}

/// Writes `bytes` to `path`.
pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    std::fs::write(path, bytes).map_err(|source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `path` (and its parents) if missing.
pub(super) fn create_dir(path: &Path) -> Result<(), ResultsError> {
    std::fs::create_dir_all(path).map_err(|source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `v` as pretty JSON with a final newline.
pub(super) fn pretty<T: serde::Serialize>(v: &T) -> String {
    // Serialising these types cannot fail: string keys, no foreign types.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The samples as CSV: [`CSV_HEADER`], then one row per sample.
pub fn samples_csv(samples: &[Sample]) -> String {
    let mut out = String::with_capacity(64 * (samples.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for s in samples {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_field(&s.workload),
            csv_field(&s.source),
            s.send_us,
            s.sent_us,
            s.latency_us,
            s.outcome.as_str(),
            s.bytes,
            csv_field(s.backend.as_deref().unwrap_or(""))
        );
    }
    out
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Reads `dir/samples.csv`.
pub fn read_samples(dir: &Path) -> Result<Vec<Sample>, ResultsError> {
    let path = dir.join("samples.csv");
    let text = std::fs::read_to_string(&path).map_err(|source| ResultsError::Io {
        path: path.clone(),
        source,
    })?;
    parse_samples(&path, &text)
}

/// Parses `samples.csv` text (`path` names it in errors).
pub fn parse_samples(path: &Path, text: &str) -> Result<Vec<Sample>, ResultsError> {
    let bad = |line: usize, message: String| ResultsError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let records = csv_records(text).map_err(|(line, m)| bad(line, m))?;
    let mut iter = records.into_iter();
    match iter.next() {
        Some((_, h)) if h.join(",") == CSV_HEADER => {}
        _ => return Err(bad(1, format!("the header is not `{CSV_HEADER}`"))),
    }
    iter.map(|(line, f)| sample_of(&f).map_err(|m| bad(line, m)))
        .collect()
}

/// One row's sample.
fn sample_of(f: &[String]) -> Result<Sample, String> {
    if f.len() != 8 {
        return Err(format!("{} fields, expected 8", f.len()));
    }
    let num = |i: usize, name: &str| {
        f[i].parse::<u64>()
            .map_err(|_| format!("{name} `{}` is not a whole number", f[i]))
    };
    let outcome = [
        SampleOutcome::Ok,
        SampleOutcome::Refused,
        SampleOutcome::Timeout,
        SampleOutcome::WrongBody,
        SampleOutcome::Error,
    ]
    .into_iter()
    .find(|o| o.as_str() == f[5])
    .ok_or_else(|| {
        format!(
            "outcome `{}` is not one of ok, refused, timeout, wrongBody, error",
            f[5]
        )
    })?;
    Ok(Sample {
        workload: f[0].clone(),
        source: f[1].clone(),
        send_us: num(2, "sendUs")?,
        sent_us: num(3, "sentUs")?,
        latency_us: num(4, "latencyUs")?,
        outcome,
        bytes: num(6, "bytes")?,
        backend: (!f[7].is_empty()).then(|| f[7].clone()),
    })
}

/// A CSV record: the line it starts on and its fields.
type Record = (usize, Vec<String>);

/// The records of CSV `text` (RFC 4180: quoted fields may hold commas,
/// doubled quotes and line breaks); an error is a line and a message.
fn csv_records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut start, mut quoted, mut was_quoted) = (1, 1, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                line += usize::from(c == '\n');
                field.push(c);
            }
            (false, '"') if field.is_empty() && !was_quoted => (quoted, was_quoted) = (true, true),
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, '\r') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut fields)));
                was_quoted = false;
                line += 1;
                start = line;
            }
            (false, '"') => return Err((line, "a quote inside an unquoted field".into())),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err((start, "a quoted field is not closed".into()));
    }
    if !field.is_empty() || !fields.is_empty() || was_quoted {
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
}

/// The run id of an experiment started at `t`: its UTC time to the second,
/// `20261128T221500Z`.
pub fn run_id(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000);
    // `2026-11-28T22:15:00.000Z` without its separators and milliseconds.
    let full = crate::controller::events::rfc3339_ms(ms);
    let whole = full.split('.').next().unwrap_or(&full);
    whole.replace(['-', ':'], "") + "Z"
}

/// A combination's directory name: its name with every byte outside
/// `A-Z a-z 0-9 . _ - = , +` written `%XX` (so `/` of a CIDR is `%2F`, and
/// `%` itself `%25`), and a name of dots only (`.`, `..`) with its dots
/// written `%2E`. Reversible by [`combination_name`], except that a name
/// longer than [`MAX_DIR_LEN`] once encoded is cut and ends in `~` and 16
/// hex digits of its hash (`run.json` keeps the full name).
pub fn combination_dir(name: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b".-_=,+".contains(&b);
    let dots_only = !name.is_empty() && name.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if keep(b) && !(dots_only && b == b'.') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    if out.len() > MAX_DIR_LEN {
        let mut cut = MAX_DIR_LEN - 17;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        let _ = write!(out, "~{:016x}", proxy::fnv1a(name.as_bytes()));
    }
    out
}

/// The combination name a [`combination_dir`] stands for (`None` for a cut
/// name or one that is not such a directory name).
pub fn combination_name(dir: &str) -> Option<String> {
    if dir == "%00" {
        return Some(String::new());
    }
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = dir.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if bytes[i] == b'~' {
            return None;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A run's directory relative to the experiment's: `<combination>/rep-<r>`.
pub fn run_dir(combination: &str, rep: u32) -> PathBuf {
    Path::new(&combination_dir(combination)).join(format!("rep-{rep}"))
}

#[cfg(test)]
pub(crate) mod tests;
