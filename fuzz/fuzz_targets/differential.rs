//! The differential property on libFuzzer's inputs: the classifier's class
//! is never below the class PostgreSQL's own parse implies, and rewrites
//! PostgreSQL reads as the same tree (comments glued to operators, dollar
//! tags with non-ASCII bytes, keyword case, whitespace) never class lower
//! than the original.
#![no_main]

use infraveil::classify::mutate::{Rng, mutate};
use infraveil::classify::{Class, classify, postgres_reading};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if sql.len() > 4096 {
        return;
    }
    let Ok((floor, key)) = postgres_reading(sql) else {
        return;
    };
    let original = classify(sql).class();
    assert!(original >= floor, "{original} below PostgreSQL's {floor}: {sql:?}");
    let mut rng = Rng::new(data.iter().fold(7u64, |h, b| h.wrapping_mul(31) ^ *b as u64));
    for _ in 0..4 {
        let m = mutate(sql, &mut rng);
        let Ok((mfloor, mkey)) = postgres_reading(&m) else {
            continue;
        };
        let got = classify(&m).class();
        assert!(got >= mfloor, "{got} below PostgreSQL's {mfloor}: {m:?}");
        if mkey == key && original != Class::Unknown {
            assert!(got >= original, "{got} for a rewrite of a {original} statement: {m:?}");
        }
    }
});
