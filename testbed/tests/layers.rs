//! The library's top-level modules depend on each other one way: a module
//! that needs a lower one's helper takes it from there, not from a sibling
//! above it. This reads every module's source (tests left out), draws the
//! graph of `crate::MODULE` references between top-level modules, and
//! fails on a circle, naming its modules, unless it is one of the circles
//! issue 13 listed to untangle (`KNOWN`, now empty): those may only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Circles that exist today, each as its sorted modules: none. (The last,
/// through topology → check and topology → state, went when the check
/// declarations and the testbed-name rule moved into `topology`.)
const KNOWN: &[&[&str]] = &[];

fn references(dir: &Path, top: &str, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            references(&path, top, graph);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            references_file(&path, top, graph);
        }
    }
}

/// The strongly connected components of more than one module.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.keys().collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for d in graph.get(&n).into_iter().flatten() {
                if graph.contains_key(d) && seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let mut comp: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[*n].contains(**m) && reaches[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if comp.len() > 1 {
            comp.sort();
            out.insert(comp);
        }
    }
    out.into_iter().collect()
}

#[test]
fn no_new_import_circles_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        // The binary's modules (main, cmd) sit above the library.
        if matches!(name.as_str(), "lib" | "main" | "cmd") {
            continue;
        }
        if path.is_dir() {
            references(&path, &name, &mut graph);
            let file = src.join(format!("{name}.rs"));
            if file.is_file() {
                references_file(&file, &name, &mut graph);
            }
        } else if !src.join(&name).is_dir() {
            references_file(&path, &name, &mut graph);
        }
    }
    let found = circles(&graph);
    let known: Vec<Vec<String>> = KNOWN
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    for c in &found {
        assert!(
            known.iter().any(|k| c.iter().all(|m| k.contains(m))),
            "a new import circle between {c:?}: take the helper from a lower module instead"
        );
    }
    assert!(!graph.is_empty() && graph.contains_key("runner"));
}

fn references_file(path: &Path, top: &str, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    let text = std::fs::read_to_string(path).expect("source");
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let deps = graph.entry(top.to_string()).or_default();
    for (i, _) in code.match_indices("crate::") {
        let name: String = code[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() && name != top {
            deps.insert(name);
        }
    }
}
