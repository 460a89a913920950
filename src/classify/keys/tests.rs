//! The cache keys held to the classifier: texts that share a key classify
//! alike, over the corpus and over the digits of every number in it.

use super::{number_shape_key, quick_shape_key};
use crate::classify::{Analysis, classify, lexer};

/// `sql` with every digit of every numeric literal changed (by
/// `step`), in place: the rest of the text is untouched.
fn vary(sql: &str, step: u32) -> Option<String> {
    use sqlparser::tokenizer::Token;
    let tokens = lexer::tokenize(sql).ok()?;
    // Token locations are (line, column) in characters, from 1.
    let mut starts = std::collections::HashMap::new();
    let (mut line, mut col) = (1u64, 1u64);
    for (i, c) in sql.char_indices() {
        starts.insert((line, col), i);
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    let mut out: Vec<char> = sql.chars().collect();
    let index: std::collections::HashMap<usize, usize> = sql
        .char_indices()
        .enumerate()
        .map(|(n, (b, _))| (b, n))
        .collect();
    for t in &tokens {
        if let Token::Number(n, _) = &t.token {
            let at = starts.get(&(t.span.start.line, t.span.start.column))?;
            let first = *index.get(at)?;
            for (k, c) in n.chars().enumerate() {
                if let Some(d) = c.to_digit(10) {
                    out[first + k] = char::from_digit((d + step) % 10, 10)?;
                }
            }
        }
    }
    Some(out.into_iter().collect())
}

fn summary(a: &Analysis) -> String {
    format!("{:?}", a.statements)
}

#[test]
fn number_keys_classify_alike() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/classify");
    let mut keyed = 0;
    let mut shared = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_none_or(|x| x != "sql") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for sql in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        {
            let Some(key) = number_shape_key(sql) else {
                continue;
            };
            keyed += 1;
            let original = summary(&classify(sql));
            for step in [1, 5, 9] {
                let Some(other) = vary(sql, step) else {
                    continue;
                };
                // Numbers in a name's arguments keep their digits: a
                // text varied there has a key of its own.
                if number_shape_key(&other).as_deref() != Some(key.as_str()) {
                    continue;
                }
                shared += 1;
                assert_eq!(
                    summary(&classify(&other)),
                    original,
                    "{sql:?} and {other:?} share a key but classify differently"
                );
            }
        }
    }
    assert!(keyed > 50, "only {keyed} corpus statements got a key");
    assert!(shared > 100, "only {shared} varied texts shared their key");
}

/// Every corpus text with a quick key, with its delimited digit runs
/// changed: the same key, the same classification.
#[test]
fn quick_keys_classify_alike() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/classify");
    let mut keyed = 0;
    let mut texts: Vec<String> = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        "UPDATE pgbench_accounts SET abalance = abalance + -4012 WHERE aid = 77;",
        "DELETE FROM t WHERE id = 3 OR 1=1",
        "DELETE FROM t WHERE 2 > 1",
        "SELECT * FROM t1, t2 WHERE t1.a = 10",
        "SELECT x FROM t LIMIT 10 OFFSET 20",
    ]
    .map(String::from)
    .to_vec();
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|x| x == "sql") {
            let text = std::fs::read_to_string(&path).unwrap();
            texts.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
                    .map(String::from),
            );
        }
    }
    for sql in &texts {
        let Some(key) = quick_shape_key(sql) else {
            continue;
        };
        keyed += 1;
        let original = summary(&classify(sql));
        for step in [1u8, 5, 9] {
            // Change every digit the key replaced (and only those).
            let k = key.as_bytes();
            let other: String = sql
                .bytes()
                .zip(&k[3..])
                .map(|(c, &m)| {
                    if c.is_ascii_digit() && m == b'9' && k.len() == sql.len() + 3 {
                        (b'0' + (c - b'0' + step) % 10) as char
                    } else {
                        c as char
                    }
                })
                .collect();
            assert_eq!(
                quick_shape_key(&other).as_deref(),
                Some(key.as_str()),
                "{sql}"
            );
            assert_eq!(
                summary(&classify(&other)),
                original,
                "{sql:?} and {other:?} share a quick key but classify differently"
            );
        }
    }
    assert!(keyed > 20, "only {keyed} texts got a quick key");
    for none in [
        "SELECT * FROM t1",
        "SELECT 1; SELECT 2",
        "SELECT '1'",
        "SELECT 1 -- 2",
        "SELECT $1",
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "SET statement_timeout = 0",
        "FETCH 5 FROM c",
        "SELECT 1e5",
        "SELECT \"t\" FROM x WHERE a = 1",
        "(SELECT 1)",
    ] {
        assert_eq!(quick_shape_key(none), None, "{none}");
    }
    assert_ne!(quick_shape_key("SELECT 1"), quick_shape_key("SELECT 10"));
}

/// Integers PostgreSQL's grammar or a type reads by value (type
/// modifiers, function arguments) keep their digits in both keys, so
/// `float(24)` never answers for `float(90)` (found by an attack).
#[test]
fn numbers_in_a_name_s_arguments_keep_their_digits() {
    for (a, b) in [
        (
            "SELECT CAST(a AS float(24)) FROM t",
            "SELECT CAST(a AS float(90)) FROM t",
        ),
        (
            "SELECT CAST(a AS float(1)) FROM t",
            "SELECT CAST(a AS float(0)) FROM t",
        ),
        (
            "SELECT CAST(a AS varchar(1000000000)) FROM t",
            "SELECT CAST(a AS varchar(3000000000)) FROM t",
        ),
        (
            "SELECT CAST(a AS timestamp(1000000000)) FROM t",
            "SELECT CAST(a AS timestamp(4294967296)) FROM t",
        ),
        (
            "SELECT a::s.in(5) FROM t WHERE id = 1",
            "SELECT a::s.in(7) FROM t WHERE id = 1",
        ),
    ] {
        for key in [quick_shape_key, number_shape_key] {
            assert!(
                key(a).is_none() || key(a) != key(b),
                "{a} and {b} share a key"
            );
        }
    }
    // Lists and expressions still vary freely.
    for (a, b) in [
        (
            "SELECT * FROM t WHERE id IN (1, 2)",
            "SELECT * FROM t WHERE id IN (3, 4)",
        ),
        ("INSERT INTO t VALUES (1, 2)", "INSERT INTO t VALUES (5, 6)"),
        (
            "SELECT * FROM t WHERE (id = 1)",
            "SELECT * FROM t WHERE (id = 2)",
        ),
    ] {
        assert!(quick_shape_key(a).is_some(), "{a}");
        assert_eq!(quick_shape_key(a), quick_shape_key(b), "{a}");
        assert_eq!(number_shape_key(a), number_shape_key(b), "{a}");
    }
}

#[test]
fn only_single_data_statements_with_numbers_get_keys() {
    assert!(number_shape_key("SELECT abalance FROM pgbench_accounts WHERE aid = 4821").is_some());
    assert_eq!(
        number_shape_key("SELECT 1 WHERE aid = 4821"),
        number_shape_key("SELECT 7 WHERE aid = 1234")
    );
    assert_ne!(
        number_shape_key("SELECT 1 WHERE aid = 4821"),
        number_shape_key("SELECT 1 WHERE aid = 48213")
    );
    assert_ne!(
        number_shape_key("SELECT 1.5"),
        number_shape_key("SELECT 15")
    );
    for none in [
        "SELECT 1; SELECT 2",
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "FETCH -1 FROM c",
        "SET statement_timeout = 0",
        "SELECT abalance FROM t WHERE aid = $1",
        "(SELECT 1)",
        "\"select\" 1",
        "SELECT 'it''s'",
    ] {
        assert_eq!(number_shape_key(none), None, "{none}");
    }
}
