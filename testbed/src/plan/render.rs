//! Prints a plan as YAML or JSON. Both come from the same serde shape, keys
//! in declaration order, so the bytes depend only on the plan.

use crate::plan::types::Plan;
use serde::Serialize;
use yaml_rust2::yaml::{Hash, Yaml};
use yaml_rust2::YamlEmitter;

/// Why a value could not be printed (a bug, not a user error).
#[derive(Debug, thiserror::Error)]
#[error("cannot print the plan: {0}")]
pub struct RenderError(String);

/// The plan as pretty JSON, ending in a newline.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, RenderError> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| RenderError(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Any serialisable value as a YAML document, ending in a newline.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, RenderError> {
    let json = serde_json::to_value(value).map_err(|e| RenderError(e.to_string()))?;
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&to_yaml_value(json))
        .map_err(|e| RenderError(e.to_string()))?;
    out.push('\n');
    Ok(out)
}

fn to_yaml_value(v: serde_json::Value) -> Yaml {
    use serde_json::Value as J;
    match v {
        J::Null => Yaml::Null,
        J::Bool(b) => Yaml::Boolean(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        J::String(s) => Yaml::String(s),
        J::Array(a) => Yaml::Array(a.into_iter().map(to_yaml_value).collect()),
        J::Object(o) => {
            let mut h = Hash::new();
            for (k, v) in o {
                h.insert(Yaml::String(k), to_yaml_value(v));
            }
            Yaml::Hash(h)
        }
    }
}

/// The plan as YAML.
pub fn plan_yaml(plan: &Plan) -> Result<String, RenderError> {
    to_yaml(plan)
}
