//! Runs every case in `testdata/classify/*.sql` through the classifier (the
//! format is described in that directory's README) and reports every
//! mismatch at once.

#[path = "common/corpus.rs"]
mod corpus;

use corpus::cases;
use infraveil::classify::{Class, classify};

#[test]
fn corpus_classes_match() {
    let cases = cases();
    assert!(cases.len() >= 400, "corpus has only {} cases", cases.len());
    let mut failures = Vec::new();
    for (file, line, want, sql) in &cases {
        let got = classify(sql);
        if got.class() != *want {
            let reasons: Vec<String> = got
                .statements
                .iter()
                .map(|s| format!("{}: {}", s.class, s.reason))
                .collect();
            failures.push(format!(
                "{file}:{line}: want {want}, got {} for {sql:?}\n    {}",
                got.class(),
                reasons.join("\n    ")
            ));
        }
    }
    let per_class = |c: Class| cases.iter().filter(|x| x.2 == c).count();
    eprintln!(
        "corpus: {} cases (read {}, write {}, ddl {}, destructive {}, privileged {}, unknown {})",
        cases.len(),
        per_class(Class::Read),
        per_class(Class::Write),
        per_class(Class::Ddl),
        per_class(Class::Destructive),
        per_class(Class::Privileged),
        per_class(Class::Unknown)
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Nothing the corpus expects to be harmful may ever come out `read`: the
/// one mistake that lets a statement through every policy.
#[test]
fn nothing_harmful_is_read() {
    for (file, line, want, sql) in cases() {
        if want != Class::Read {
            assert_ne!(classify(&sql).class(), Class::Read, "{file}:{line}: {sql}");
        }
    }
}

/// The differential property, on a seeded generator so a failure replays:
/// every corpus statement is rewritten in ways PostgreSQL reads as the very
/// same tree (comments glued to operators, dollar tags with non-ASCII
/// bytes, keyword case, whitespace), and the classifier's class must never
/// drop below PostgreSQL's own reading of the text, nor below its class for
/// the original. `INFRAVEIL_DIFF_ROUNDS` raises the rounds per statement.
#[test]
fn rewrites_postgres_reads_the_same_never_class_lower() {
    use infraveil::classify::mutate::{Rng, mutate};
    use infraveil::classify::postgres_reading;
    let rounds: usize = std::env::var("INFRAVEIL_DIFF_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut rng = Rng::new(0x001e_550f_c0de);
    let (mut checked, mut stricter) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (file, line, _, sql) in cases() {
        let Ok((_, key)) = postgres_reading(&sql) else {
            continue;
        };
        let original = classify(&sql).class();
        for _ in 0..rounds {
            let m = mutate(&sql, &mut rng);
            let Ok((floor, mkey)) = postgres_reading(&m) else {
                continue;
            };
            let got = classify(&m).class();
            if got < floor {
                failures.push(format!(
                    "{file}:{line}: {got} below PostgreSQL's reading {floor} for {m:?}"
                ));
            }
            // An unknown original may be unknown for the very differential a
            // rewrite removes: for it, PostgreSQL's reading is the bar.
            if mkey == key && original != Class::Unknown {
                checked += 1;
                if got < original {
                    failures.push(format!(
                        "{file}:{line}: {got} for a rewrite of a {original} statement: {m:?}"
                    ));
                } else if got > original {
                    stricter += 1;
                }
            }
        }
    }
    eprintln!(
        "differential: {checked} rewrites PostgreSQL reads as the original; {stricter} classed stricter than it"
    );
    assert!(checked > 1000, "only {checked} rewrites checked");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
