//! Writes a YAML tree (`yaml::Node`) back as block-style YAML text that
//! `yaml::parse` reads into the same values: how an experiment turns a
//! topology with a combination's parameters set into the file text a
//! testbed is brought up from (and hashed). Comments and anchors are not
//! kept; scalars keep whether they were plain (numbers and booleans are).

use super::yaml::{Node, Value};

/// `node` as YAML text, ending with a newline.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => block_map(&mut out, entries, 0),
        Value::Seq(items) if !items.is_empty() => block_seq(&mut out, items, 0),
        v => {
            out.push_str(&inline(v));
            out.push('\n');
        }
    }
    out
}

/// A value that fits on one line: a scalar, null or an empty collection.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "~".to_string(),
        Value::Scalar { text, plain } => scalar(text, *plain),
        Value::Seq(_) => "[]".to_string(),
        Value::Map(_) => "{}".to_string(),
    }
}

/// Whether `v` is written on lines of its own.
fn is_block(v: &Value) -> bool {
    matches!(v, Value::Map(e) if !e.is_empty()) || matches!(v, Value::Seq(i) if !i.is_empty())
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn block_map(out: &mut String, entries: &[(super::yaml::Key, Node)], ind: usize) {
    for (i, (k, v)) in entries.iter().enumerate() {
        // The first key of a mapping inside a list item follows its `- `.
        if i > 0 || !out.ends_with("- ") {
            indent(out, ind);
        }
        out.push_str(&scalar(&k.name, true));
        out.push(':');
        value_after(out, &v.value, ind);
    }
}

fn block_seq(out: &mut String, items: &[Node], ind: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            indent(out, ind);
        }
        out.push_str("- ");
        match &item.value {
            Value::Map(e) if !e.is_empty() => block_map(out, e, ind + 2),
            Value::Seq(s) if !s.is_empty() => {
                out.push('\n');
                block_seq(out, s, ind + 2)
            }
            v => {
                out.push_str(&inline(v));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`: the value inline, or its block on the next lines.
fn value_after(out: &mut String, v: &Value, ind: usize) {
    if is_block(v) {
        out.push('\n');
        match v {
            Value::Map(e) => block_map(out, e, ind + 2),
            Value::Seq(s) => block_seq(out, s, ind + 2),
            _ => {}
        }
    } else {
        out.push(' ');
        out.push_str(&inline(v));
        out.push('\n');
    }
}

/// A scalar: plain when it was plain and reads back as the same plain
/// text, else double-quoted (JSON escapes are valid YAML ones).
fn scalar(text: &str, plain: bool) -> String {
    if plain && plain_safe(text) {
        text.to_string()
    } else {
        serde_json::Value::String(text.to_string()).to_string()
    }
}

/// Whether `text` written plain, in block or flow context, reads back as
/// itself.
fn plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    // `-`, `?` and `:` start a plain scalar when something other than a
    // space follows.
    let indicator =
        "-?:".contains(first) && (text.len() == 1 || text[1..].starts_with([' ', '\t']));
    let bad_start = ",[]{}#&*!|>'\"%@` ".contains(first) || indicator;
    let bad_inside = text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.ends_with(' ')
        || text.contains(['\n', '\t', ',', '[', ']', '{', '}'])
        || text.chars().any(char::is_control);
    let null_like = matches!(text, "~" | "null" | "Null" | "NULL");
    !bad_start && !bad_inside && !null_like
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::yaml::parse;

    /// Values without positions, for comparing trees.
    fn strip(n: &Node) -> String {
        match &n.value {
            Value::Null => "null".into(),
            Value::Scalar { text, plain } => format!("{}{text:?}", if *plain { "p" } else { "q" }),
            Value::Seq(s) => format!("[{}]", s.iter().map(strip).collect::<Vec<_>>().join(",")),
            Value::Map(e) => format!(
                "{{{}}}",
                e.iter()
                    .map(|(k, v)| format!("{:?}:{}", k.name, strip(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn round_trip(src: &str) {
        let a = parse(src).unwrap();
        let text = emit(&a);
        let b = parse(&text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        assert_eq!(strip(&a), strip(&b), "emitted:\n{text}");
    }

    #[test]
    fn nested_maps_lists_and_scalars_read_back_the_same() {
        round_trip(
            "name: t\nseed: 7\nnodes:\n  - name: n1\n    labels: {a: b}\n  - {name: n2}\n\
             pods:\n  - name: p\n    command: [sh, -c, 'echo \"hi\": there # x']\n    \
             empty: []\n    none: {}\n    nothing: ~\n    deep:\n      - - 1\n        - 2\n      - []\n\
             text: |\n  line one\n  line two\nflag: true\nquoted: \"80\"\nneg: -3\ncidr: 10.0.0.0/16\n",
        );
    }

    #[test]
    fn odd_plain_text_is_quoted_and_stays_a_string() {
        let mut n = parse("a: x\n").unwrap();
        if let Value::Map(e) = &mut n.value {
            e[0].1.value = Value::Scalar {
                text: "- b: c #d".into(),
                plain: true,
            };
        }
        let back = parse(&emit(&n)).unwrap();
        assert_eq!(strip(&back), "{\"a\":q\"- b: c #d\"}");
    }

    #[test]
    fn every_example_topology_plans_the_same_after_a_round_trip() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let src = std::fs::read_to_string(&path).unwrap();
            let a = crate::load_str("t.yaml", src.clone()).unwrap();
            let text = emit(&parse(&src).unwrap());
            let b = crate::load_str("t.yaml", text).unwrap();
            assert_eq!(a.plan, b.plan, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} example topologies");
    }
}
