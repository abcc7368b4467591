//! The crate's layering, checked from its source: which top-level module
//! names which (`crate::X` outside test code). The rules of
//! docs/architecture.md — no cycles; the wire-format folders below the
//! seams' registry and the flow; the seams' traits below the wire formats;
//! only the registry names every wire format — fail here, not in review.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const WIRES: &[&str] = &["openai", "anthropic", "gemini"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            // Test-only folders (flow/tests) may reach anything.
            if p.file_name().unwrap() != "tests" {
                files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in all {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests sit at the end of a file, in `mod tests { … }`.
        let end = text.find("\nmod tests {").unwrap_or(text.len());
        let code = &text[..end];
        let deps = g.entry(module.clone()).or_default();
        for line in code.lines().map(str::trim_start) {
            if line.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    g
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(g.len() > 15, "{g:?}");
    assert_eq!(cycle(&g), None, "{g:#?}");
}

#[test]
fn each_layer_names_only_what_is_below_it() {
    let g = graph();
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    let above_wires = ["flow", "translate", "registry", "gateway"];
    for w in WIRES {
        for d in deps(w) {
            assert!(!above_wires.contains(&d.as_str()), "{w} names {d}");
            assert!(
                !WIRES.contains(&d.as_str()),
                "{w} names another wire format, {d}"
            );
        }
    }
    for seam in ["api", "backend"] {
        for d in deps(seam) {
            assert!(
                !WIRES.contains(&d.as_str()) && !above_wires.contains(&d.as_str()),
                "the {seam} seam names {d}"
            );
        }
    }
    // Only the registry names the wire formats (by their implementations).
    for (m, ds) in &g {
        if m != "registry" && !WIRES.contains(&m.as_str()) {
            for w in WIRES {
                assert!(!ds.contains(*w), "{m} dispatches on {w} itself");
            }
        }
    }
    assert_eq!(deps("canonical"), BTreeSet::new());
    assert!(
        deps("error").iter().all(|d| d == "canonical"),
        "{:?}",
        deps("error")
    );
}

#[test]
#[ignore = "prints the graph: cargo test --test layers -- --ignored --nocapture"]
fn print_graph() {
    for (m, ds) in graph() {
        println!(
            "{m:>14} → {}",
            ds.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
}
