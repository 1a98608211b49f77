//! The JSON shapes docs/json.md documents, read from its tables, and a
//! checker of a JSON value against them: every key a documented field of
//! the documented type, every field that is not optional present, no null,
//! and (structurally) objects or lists of objects at the top, no rows.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A field's type, as a type cell of the documentation spells it.
#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    /// `string`.
    String,
    /// `integer`.
    Integer,
    /// `number`: any JSON number (fractions too).
    Number,
    /// `boolean`.
    Boolean,
    /// ``one of `a`, `b` ``: a string among these.
    OneOf(Vec<String>),
    /// `list of T`.
    List(Box<Ty>),
    /// `map of T`: an object with any keys.
    Map(Box<Ty>),
    /// A documented type (a `###` section).
    Named(String),
}

/// One row of a type's table.
#[derive(Clone, Debug)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its type.
    pub ty: Ty,
    /// Whether it may be absent.
    pub optional: bool,
}

/// Every documented type, by name.
#[derive(Debug, Default)]
pub struct Doc {
    /// The fields of each type.
    pub types: BTreeMap<String, Vec<Field>>,
    /// (type, field) pairs met by [`Doc::check`] so far.
    pub seen: std::cell::RefCell<BTreeSet<(String, String)>>,
}

/// `[X](#x)` becomes `X`.
fn strip_links(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                out.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn parse_ty(s: &str) -> Ty {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("list of ") {
        return Ty::List(Box::new(parse_ty(rest)));
    }
    if let Some(rest) = s.strip_prefix("map of ") {
        return Ty::Map(Box::new(parse_ty(rest)));
    }
    if let Some(rest) = s.strip_prefix("one of ") {
        return Ty::OneOf(
            rest.split(',')
                .map(|v| v.trim().trim_matches('`').to_string())
                .collect(),
        );
    }
    match s {
        "string" => Ty::String,
        "integer" => Ty::Integer,
        "number" => Ty::Number,
        "boolean" => Ty::Boolean,
        other => Ty::Named(other.to_string()),
    }
}

impl Doc {
    /// The types documented in `markdown`: each `### Name` section's table
    /// of `| field | type | meaning |` rows, plus the fields of the type an
    /// "Every field of [X](#x)" sentence in the section names.
    pub fn parse(markdown: &str) -> Doc {
        let mut types: BTreeMap<String, Vec<Field>> = BTreeMap::new();
        let mut inherits: Vec<(String, String)> = Vec::new();
        let mut current: Option<String> = None;
        for line in markdown.lines() {
            if let Some(name) = line.strip_prefix("### ") {
                let name = name.trim().to_string();
                types.entry(name.clone()).or_default();
                current = Some(name);
                continue;
            }
            if line.starts_with("## ") {
                current = None;
                continue;
            }
            let Some(ty) = &current else { continue };
            if let Some(at) = line.find("Every field of [") {
                let rest = &line[at + "Every field of [".len()..];
                if let Some(end) = rest.find(']') {
                    inherits.push((ty.clone(), rest[..end].to_string()));
                }
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 || !cells[1].starts_with('`') {
                continue;
            }
            let mut cell = strip_links(cells[2]);
            let optional = cell.ends_with(", optional");
            if optional {
                cell.truncate(cell.len() - ", optional".len());
            }
            types.get_mut(ty).expect("section").push(Field {
                name: cells[1].trim_matches('`').to_string(),
                ty: parse_ty(&cell),
                optional,
            });
        }
        for (child, parent) in inherits {
            let mut fields = types.get(&parent).cloned().unwrap_or_else(|| {
                panic!("{child} takes every field of {parent}, which is not documented")
            });
            fields.extend(types.remove(&child).unwrap_or_default());
            types.insert(child, fields);
        }
        let doc = Doc {
            types,
            seen: Default::default(),
        };
        for (name, fields) in &doc.types {
            assert!(!fields.is_empty(), "type {name} documents no field");
            for f in fields {
                doc.assert_known(&f.ty, &format!("{name}.{}", f.name));
            }
        }
        doc
    }

    fn assert_known(&self, ty: &Ty, at: &str) {
        match ty {
            Ty::List(t) | Ty::Map(t) => self.assert_known(t, at),
            Ty::Named(n) => assert!(
                self.types.contains_key(n),
                "{at}: type `{n}` is not documented"
            ),
            _ => {}
        }
    }

    /// Every way `value` differs from type `ty`, each with its path.
    pub fn check(&self, ty: &Ty, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check_at(ty, value, "$", &mut errors);
        errors
    }

    /// Checks `value` as a `root` (a documented type name, or `list of X`).
    pub fn check_root(&self, root: &str, value: &Value) -> Vec<String> {
        self.check(&parse_ty(root), value)
    }

    fn check_at(&self, ty: &Ty, v: &Value, path: &str, errors: &mut Vec<String>) {
        let mut fail = |what: String| errors.push(format!("{path}: {what}, found {v}"));
        match (ty, v) {
            (_, Value::Null) => fail("null (absent values are omitted)".into()),
            (Ty::String, Value::String(_)) | (Ty::Boolean, Value::Bool(_)) => {}
            (Ty::Integer, Value::Number(n)) if n.is_u64() || n.is_i64() => {}
            (Ty::Number, Value::Number(_)) => {}
            (Ty::OneOf(vs), Value::String(s)) if vs.contains(s) => {}
            (Ty::OneOf(vs), _) => fail(format!("expected one of {vs:?}")),
            (Ty::List(t), Value::Array(items)) => {
                for (i, x) in items.iter().enumerate() {
                    self.check_at(t, x, &format!("{path}[{i}]"), errors);
                }
            }
            (Ty::Map(t), Value::Object(m)) => {
                for (k, x) in m {
                    self.check_at(t, x, &format!("{path}[{k:?}]"), errors);
                }
            }
            (Ty::Named(name), Value::Object(m)) => {
                let fields = &self.types[name];
                for (k, x) in m {
                    match fields.iter().find(|f| &f.name == k) {
                        Some(f) => {
                            self.seen.borrow_mut().insert((name.clone(), k.clone()));
                            self.check_at(&f.ty, x, &format!("{path}.{k}"), errors);
                        }
                        None => errors.push(format!(
                            "{path}: field `{k}` is not a documented field of {name}"
                        )),
                    }
                }
                for f in fields.iter().filter(|f| !f.optional) {
                    if !m.contains_key(&f.name) {
                        errors.push(format!("{path}: {name} lacks field `{}`", f.name));
                    }
                }
            }
            (ty, _) => fail(format!("expected {ty:?}")),
        }
    }

    /// The documented (type, field) pairs no checked value had.
    pub fn unseen(&self) -> Vec<String> {
        let seen = self.seen.borrow();
        self.types
            .iter()
            .flat_map(|(t, fs)| fs.iter().map(move |f| (t.clone(), f.name.clone())))
            .filter(|k| !seen.contains(k))
            .map(|(t, f)| format!("{t}.{f}"))
            .collect()
    }
}

/// Structural faults of a `--json` output: its top level is not an object
/// or a list of objects, a value is null, or a list holds lists (rows of
/// positional cells).
pub fn structural_faults(v: &Value) -> Vec<String> {
    let mut faults = Vec::new();
    match v {
        Value::Object(_) => {}
        Value::Array(items) if items.iter().all(Value::is_object) => {}
        _ => faults.push("$: the top level is neither an object nor a list of objects".into()),
    }
    fn walk(v: &Value, path: &str, faults: &mut Vec<String>) {
        match v {
            Value::Null => faults.push(format!("{path}: null")),
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    if x.is_array() {
                        faults.push(format!("{path}[{i}]: a list in a list (a positional row)"));
                    }
                    walk(x, &format!("{path}[{i}]"), faults);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, &format!("{path}.{k}"), faults);
                }
            }
            _ => {}
        }
    }
    walk(v, "$", &mut faults);
    faults
}
