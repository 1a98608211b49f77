//! A combination's values applied to the topology: the file is parsed, each
//! `path: value` is set in its tree (replacing the field or inserting it and
//! any missing parent mapping), and the result is decoded, checked and
//! planned as `crate::load_str` does. Pure: no files are read.

use crate::diag::{Diagnostic, Diagnostics};
use crate::topology::yaml::{self, Key, Node, Value};
use crate::{LoadError, Loaded};

/// Why a value could not be set: the text names the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetError(pub String);

/// Sets the field at dotted `path` (mapping keys only) to the plain scalar
/// `value`, inserting missing fields and mappings.
pub fn set(root: &mut Node, path: &str, value: &str) -> Result<(), SetError> {
    let mut node = root;
    let mut done = String::new();
    for seg in path.split('.') {
        if seg.is_empty() || seg.contains(['[', ']', ' ']) {
            return Err(SetError(format!(
                "`{path}` is not a path of mapping fields like `cluster.proxy`"
            )));
        }
        let pos = node.pos;
        if node.value == Value::Null {
            node.value = Value::Map(Vec::new());
        }
        let entries = match &mut node.value {
            Value::Map(entries) => entries,
            other => {
                return Err(SetError(format!(
                    "`{done}` is {}, not a mapping with a field `{seg}`",
                    other.describe()
                )))
            }
        };
        let i = match entries.iter().position(|(k, _)| k.name == seg) {
            Some(i) => i,
            None => {
                entries.push((
                    Key {
                        name: seg.to_string(),
                        pos,
                    },
                    Node {
                        value: Value::Null,
                        pos,
                    },
                ));
                entries.len() - 1
            }
        };
        node = &mut entries[i].1;
        done = crate::topology::decode::join(&done, seg);
    }
    node.value = Value::Scalar {
        text: value.to_string(),
        plain: true,
    };
    Ok(())
}

/// The topology text with `values` (path, value) set: `source` parsed, the
/// values set in its tree and the tree written back as YAML (comments are
/// not kept). [`load_with`] of the same values is what it plans to; run it
/// first for errors located in the original file.
pub fn source_with(source: &str, values: &[(&str, &str)]) -> Result<String, SetError> {
    let mut root =
        yaml::parse(source).map_err(|_| SetError("the topology is not valid YAML".to_string()))?;
    for (path, value) in values {
        set(&mut root, path, value)?;
    }
    Ok(crate::topology::emit::emit(&root))
}

/// The topology `source` (named `file`) with `values` (path, value) set,
/// checked and planned.
pub fn load_with(file: &str, source: &str, values: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    let invalid = |diagnostics: Vec<Diagnostic>| LoadError::Invalid {
        file: file.to_string(),
        source_text: source.to_string(),
        diagnostics,
    };
    let mut root = yaml::parse(source).map_err(invalid)?;
    let mut diags = Diagnostics::default();
    for (path, value) in values {
        if let Err(e) = set(&mut root, path, value) {
            let at = crate::diag::At::new(root.pos, *path);
            diags.push(Diagnostic::error(&at, e.0));
        }
    }
    if diags.has_errors() {
        return Err(invalid(diags.into_sorted()));
    }
    let topo = crate::topology::decode::decode(&root, &mut diags);
    crate::topology::check::check(&topo, &mut diags);
    let plan = crate::plan::build::build(&topo, &mut diags);
    match plan {
        Some(plan) if !diags.has_errors() => Ok(Loaded {
            source: source.to_string(),
            topology: topo,
            plan,
            warnings: diags.into_sorted(),
        }),
        _ => Err(invalid(diags.into_sorted())),
    }
}

/// The first error of a load, as one line for a message.
pub fn first_problem(e: &LoadError) -> String {
    match e {
        LoadError::Read { .. } | LoadError::Share(_) => e.to_string(),
        LoadError::Invalid { diagnostics, .. } => {
            diagnostics.iter().find(|d| d.is_error()).map_or_else(
                || e.to_string(),
                |d| format!("line {}: `{}`: {}", d.pos.line, d.path, d.message),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPO: &str = "name: t\nnodes: [{name: node1}]\ncluster:\n  proxy: iptables\n";

    #[test]
    fn the_text_with_values_set_plans_as_load_with_does() {
        let values = [("cluster.proxy", "nftables"), ("seed", "5")];
        let text = source_with(TOPO, &values).unwrap();
        let a = load_with("t.yaml", TOPO, &values).unwrap();
        let b = crate::load_str("t.yaml", text).unwrap();
        assert_eq!(a.plan, b.plan);
        assert_eq!(b.topology.seed, 5);
    }

    #[test]
    fn replaces_an_existing_field() {
        let l = load_with("t.yaml", TOPO, &[("cluster.proxy", "nftables")]).unwrap();
        assert_eq!(
            format!("{:?}", l.plan.cluster.proxy).to_lowercase(),
            "nftables"
        );
    }

    #[test]
    fn inserts_a_missing_field_and_mapping() {
        let src = "name: t\nnodes: [{name: node1}]\n";
        let l = load_with(
            "t.yaml",
            src,
            &[("cluster.overlay", "vxlan"), ("seed", "9")],
        )
        .unwrap();
        assert_eq!(l.topology.seed, 9);
        assert_eq!(l.topology.cluster.overlay.value, overlay::Backend::Vxlan);
    }

    #[test]
    fn a_bad_value_is_an_error_at_its_path() {
        let e = load_with("t.yaml", TOPO, &[("cluster.proxy", "ipvs")]).unwrap_err();
        assert!(
            first_problem(&e).contains("cluster.proxy"),
            "{}",
            first_problem(&e)
        );
    }

    #[test]
    fn an_unknown_field_is_an_error() {
        let e = load_with("t.yaml", TOPO, &[("cluster.proxi", "x")]).unwrap_err();
        assert!(
            first_problem(&e).contains("unknown field `proxi`"),
            "{}",
            first_problem(&e)
        );
    }

    #[test]
    fn a_path_through_a_scalar_is_an_error() {
        let e = load_with("t.yaml", TOPO, &[("name.x", "y")]).unwrap_err();
        assert!(
            first_problem(&e).contains("not a mapping"),
            "{}",
            first_problem(&e)
        );
        assert!(load_with("t.yaml", TOPO, &[("nodes[0].name", "y")]).is_err());
    }
}
