//! The classifier corpus in `testdata/classify/*.sql` (format in that
//! directory's README), shared by the offline and live corpus tests.

use std::path::Path;

use infraveil::classify::Class;

fn parse_class(s: &str) -> Class {
    serde_json::from_value(serde_json::Value::String(s.trim().to_owned()))
        .unwrap_or_else(|_| panic!("unknown class {s:?} in corpus header"))
}

/// (file, line, expected class, SQL) for every case.
pub fn cases() -> Vec<(String, usize, Class, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/classify");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        enum Mode {
            None,
            Each(Class),
            One(Class, usize, Vec<String>),
        }
        let mut mode = Mode::None;
        let flush = |mode: &mut Mode, out: &mut Vec<_>| {
            if let Mode::One(c, line, lines) = std::mem::replace(mode, Mode::None)
                && !lines.is_empty()
            {
                out.push((name.clone(), line, c, lines.join("\n")));
            }
        };
        for (i, line) in text.lines().enumerate() {
            if let Some(c) = line.strip_prefix("-- expect-each ") {
                flush(&mut mode, &mut out);
                mode = Mode::Each(parse_class(c));
            } else if let Some(c) = line.strip_prefix("-- expect ") {
                flush(&mut mode, &mut out);
                mode = Mode::One(parse_class(c), i + 2, Vec::new());
            } else {
                match &mut mode {
                    Mode::Each(c) => {
                        if !line.trim().is_empty() && !line.starts_with("-- ") {
                            out.push((name.clone(), i + 1, *c, line.to_owned()));
                        }
                    }
                    Mode::One(..) if line.trim().is_empty() => flush(&mut mode, &mut out),
                    Mode::One(_, _, lines) => lines.push(line.to_owned()),
                    Mode::None => {}
                }
            }
        }
        flush(&mut mode, &mut out);
    }
    out
}
