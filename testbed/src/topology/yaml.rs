//! Reads YAML into a tree whose every node and key remembers its line and
//! column, so that errors found long after parsing can still point at the
//! text that caused them. Duplicate keys, several documents, anchors, aliases
//! and `<<` merge keys are handled here.

use crate::diag::{At, Diagnostic, Pos};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

/// The shapes a YAML value can take.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// Any scalar, with its text; `plain` when written without quotes
    /// (only plain scalars can be numbers or booleans).
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, keys unique.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where it is.
    pub pos: Pos,
}

impl Value {
    /// The kind of value, for messages: "a mapping", "a list", ...
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "nothing (null)".into(),
            Value::Scalar { text, plain } => {
                if *plain && text.parse::<i64>().is_ok() {
                    format!("the number {text}")
                } else if *plain && matches!(text.as_str(), "true" | "false") {
                    format!("the boolean {text}")
                } else {
                    format!("the text `{text}`")
                }
            }
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// Parses one YAML document. Syntax errors, duplicate keys, non-scalar keys
/// and extra documents are returned as diagnostics.
pub fn parse(source: &str) -> Result<Node, Vec<Diagnostic>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        let at = At::new(pos(m, 1), "");
        let info = e.info();
        return Err(vec![Diagnostic::error(
            &at,
            format!("YAML syntax error: {info}"),
        )
        .help(syntax_help(info))]);
    }
    if builder.docs.len() > 1 {
        let second = &builder.docs[1];
        builder.errors.push(
            Diagnostic::error(
                &At::new(second.pos, ""),
                "the file holds more than one YAML document",
            )
            .help("a topology is one document: remove the `---` line and everything after it, or put the second topology in its own file"),
        );
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.docs.into_iter().next().unwrap_or(Node {
        value: Value::Null,
        pos: Pos {
            line: 1,
            col: 1,
            len: 1,
        },
    }))
}

fn syntax_help(info: &str) -> &'static str {
    if info.contains("tab") {
        "YAML indents with spaces only: replace the tab characters with spaces"
    } else if info.contains("flow") || info.contains("']'") || info.contains("'}'") {
        "check that every `[` and `{` on or before this line is closed"
    } else if info.contains("mapping values are not allowed") {
        "a value containing `: ` must be quoted, or the line is indented wrongly"
    } else {
        "check the indentation of this line and the one before: nested fields are indented further than their parent, siblings equally"
    }
}

fn pos(m: &Marker, len: usize) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
        len,
    }
}

/// Builds nodes from parser events.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    errors: Vec<Diagnostic>,
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        path: String,
        entries: Vec<(Key, Node)>,
        merged: Vec<(Key, Node)>,
        pending: Option<Key>,
        pos: Pos,
        anchor: usize,
    },
}

impl Builder {
    /// The field path of the value that comes next.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, items, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map { path, pending, .. }) => match pending {
                Some(k) if path.is_empty() => k.name.clone(),
                Some(k) => format!("{path}.{}", k.name),
                None => path.clone(),
            },
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                path,
                entries,
                merged,
                pending,
                ..
            }) => match pending.take() {
                None => match node.value {
                    Value::Scalar { text, .. } => {
                        *pending = Some(Key {
                            name: text,
                            pos: node.pos,
                        })
                    }
                    Value::Null => {
                        *pending = Some(Key {
                            name: String::new(),
                            pos: node.pos,
                        })
                    }
                    _ => {
                        self.errors.push(
                            Diagnostic::error(
                                &At::new(node.pos, ""),
                                "a mapping key must be a plain name, not a list or mapping",
                            )
                            .help("write `field: value`"),
                        );
                        *pending = Some(Key {
                            name: String::new(),
                            pos: node.pos,
                        });
                    }
                },
                Some(key) => {
                    if key.name == "<<" {
                        merge(merged, node);
                    } else if let Some((first, _)) =
                        entries.iter().find(|(k, _)| k.name == key.name)
                    {
                        let first_line = first.pos.line;
                        let field = if path.is_empty() {
                            key.name.clone()
                        } else {
                            format!("{path}.{}", key.name)
                        };
                        self.errors.push(
                            Diagnostic::error(
                                &At::new(Pos { len: key.name.chars().count().max(1), ..key.pos }, field),
                                format!(
                                    "the key `{}` appears twice in one mapping (first on line {first_line})",
                                    key.name
                                ),
                            )
                            .help("remove one of the two, or merge their contents"),
                        );
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// `<<: *base` (or a list of them): collects the merged mappings' keys; the
/// mapping's own keys win over them when the mapping ends.
fn merge(merged: &mut Vec<(Key, Node)>, node: Node) {
    let sources = match node.value {
        Value::Map(m) => vec![m],
        Value::Seq(items) => items
            .into_iter()
            .filter_map(|n| match n.value {
                Value::Map(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for source in sources {
        for (k, v) in source {
            if !merged.iter().any(|(e, _)| e.name == k.name) {
                merged.push((k, v));
            }
        }
    }
}

/// The node of one scalar event: null for an empty or null plain scalar,
/// its first line (quotes included) as the span.
fn scalar_node(text: String, style: TScalarStyle, mark: &Marker) -> Node {
    let plain = style == TScalarStyle::Plain;
    let quotes = if matches!(
        style,
        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
    ) {
        2
    } else {
        0
    };
    let len = text.lines().next().map_or(0, |l| l.chars().count()) + quotes;
    let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
        Value::Null
    } else {
        Value::Scalar { text, plain }
    };
    Node {
        value,
        pos: pos(mark, len.max(1)),
    }
}

/// Turns a finished frame into its node and anchor: a mapping's own keys
/// first, then the merged keys it does not override.
fn close_frame(frame: Frame) -> (Node, usize) {
    match frame {
        Frame::Seq {
            items, pos, anchor, ..
        } => (
            Node {
                value: Value::Seq(items),
                pos,
            },
            anchor,
        ),
        Frame::Map {
            mut entries,
            merged,
            pos,
            anchor,
            ..
        } => {
            for (k, v) in merged {
                if !entries.iter().any(|(e, _)| e.name == k.name) {
                    entries.push((k, v));
                }
            }
            // A block mapping's start event comes after its
            // first key: point at that key instead.
            let pos = match entries.first() {
                Some((k, _)) if (k.pos.line, k.pos.col) < (pos.line, pos.col) => {
                    Pos { len: 1, ..k.pos }
                }
                _ => pos,
            };
            (
                Node {
                    value: Value::Map(entries),
                    pos,
                },
                anchor,
            )
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.finish(scalar_node(text, style, &mark), anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                path: self.next_path(),
                items: Vec::new(),
                pos: pos(&mark, 1),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                path: self.next_path(),
                entries: Vec::new(),
                merged: Vec::new(),
                pending: None,
                pos: pos(&mark, 1),
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor) = close_frame(frame);
                    self.finish(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    value: Value::Null,
                    pos: pos(&mark, 1),
                });
                self.finish(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let n = parse("name: demo\nnodes:\n  - name: n1\n").unwrap();
        let Value::Map(m) = n.value else { panic!() };
        assert_eq!(m[0].0.pos.line, 1);
        assert_eq!((m[0].1.pos.line, m[0].1.pos.col, m[0].1.pos.len), (1, 7, 4));
        let Value::Seq(items) = &m[1].1.value else {
            panic!()
        };
        let Value::Map(node) = &items[0].value else {
            panic!()
        };
        assert_eq!((node[0].1.pos.line, node[0].1.pos.col), (3, 11));
    }

    #[test]
    fn duplicate_keys_and_documents() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert!(e[0].message.contains("appears twice"), "{e:?}");
        assert_eq!(e[0].pos.line, 2);
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e[0].message.contains("more than one YAML document"));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let n = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        let Value::Map(m) = n.value else { panic!() };
        let Value::Map(other) = &m[1].1.value else {
            panic!()
        };
        let names: Vec<_> = other.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["y", "x"]);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e[0].message.starts_with("YAML syntax error"));
        assert!(e[0].pos.line >= 1);
    }
}
