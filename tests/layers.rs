//! The crate's shape, checked: modules form layers that only point down,
//! and no file or function in `src/` grows past what a reader can hold.
//!
//! Reads the source, so it needs no build of anything but itself. A failure
//! names the file and the offending import or function.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may use only modules of lower
/// layers. Utilities with no domain knowledge sit at the bottom.
const LAYERS: &[(&str, u32)] = &[
    ("time", 0),
    ("config", 0),
    ("shutdown", 0),
    ("cli", 0),
    ("sandbox", 0),
    ("net", 1),
    ("protocol", 1),
    // A client of the firewall: the wire and the admin API, TLS from `net`.
    ("mcp", 2),
    ("classify", 2),
    ("metrics", 3),
    ("policy", 3),
    ("auth", 4),
    ("store", 4),
    ("upstream", 4),
    ("audit", 5),
    ("grants", 6),
    ("approvals", 6),
    ("inventory", 7),
    ("proxy", 7),
    ("admin", 8),
    ("daemon", 9),
    ("demo", 10),
];

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 120;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            out.push((p.strip_prefix(src()).unwrap().to_owned(), text));
        }
    }
}

/// The top-level module a file belongs to (`None` for `lib.rs` and the
/// binaries, which may use anything).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

/// Code without `//` comments (doc links may point anywhere).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| {
        let code = match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        };
        (i + 1, code)
    })
}

fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` in macros, or part of a longer name.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn modules_only_use_lower_layers() {
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut wrong = Vec::new();
    for (rel, text) in &files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some(&own) = layers.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in LAYERS",
                rel.display()
            ));
            continue;
        };
        for (n, line) in code_lines(text) {
            for used in crate_paths(line) {
                if used == module {
                    continue;
                }
                match layers.get(used.as_str()) {
                    Some(&layer) if layer < own => {}
                    Some(&layer) => wrong.push(format!(
                        "{}:{n}: `{module}` (layer {own}) uses `{used}` (layer {layer})",
                        rel.display()
                    )),
                    None => wrong.push(format!(
                        "{}:{n}: `crate::{used}` is not a module in LAYERS",
                        rel.display()
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_in_lib_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(!declared.is_empty());
    for m in &declared {
        assert!(
            layers.contains_key(m),
            "lib.rs declares `{m}`, which has no layer"
        );
    }
    for (m, _) in LAYERS {
        assert!(
            declared.contains(m),
            "LAYERS names `{m}`, which lib.rs does not declare"
        );
    }
}

/// Where each `fn` item starts and how many lines it runs to its closing
/// brace at the same indent (rustfmt's layout makes that exact).
fn functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut words = trimmed.split_whitespace();
        let mut is_fn = false;
        for w in words.by_ref() {
            match w {
                "pub" | "async" | "const" | "unsafe" | "extern" => {}
                w if w.starts_with("pub(") => {}
                "fn" => {
                    is_fn = true;
                    break;
                }
                _ => break,
            }
        }
        if !is_fn {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (trait items) ends in `;`.
        let Some(open) = (i..lines.len())
            .find(|&j| lines[j].trim_end().ends_with('{') || lines[j].trim_end().ends_with(';'))
        else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            out.push((i + 1, name, end - i + 1));
        }
    }
    out
}

#[test]
fn no_file_or_function_in_src_is_too_long() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut long = Vec::new();
    for (rel, text) in &files {
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            long.push(format!(
                "{}: {n} lines (limit {MAX_FILE_LINES})",
                rel.display()
            ));
        }
        for (line, name, len) in functions(text) {
            if len > MAX_FN_LINES {
                long.push(format!(
                    "{}:{line}: fn {name} is {len} lines (limit {MAX_FN_LINES})",
                    rel.display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}

#[test]
fn the_function_scanner_measures_what_it_should() {
    let text = "pub fn a() {\n    x();\n}\n\ntrait T {\n    fn b(&self);\n    fn c(&self) {\n        y();\n    }\n}\n";
    let f = functions(text);
    assert_eq!(f, vec![(1, "a".into(), 3), (7, "c".into(), 3)]);
    assert_eq!(
        crate_paths("use crate::audit::X; $crate::no; my_crate::no"),
        vec!["audit"]
    );
}
