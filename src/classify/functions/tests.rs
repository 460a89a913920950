//! The reviewed function table held to what the classifier does with it.

use super::*;

#[test]
fn table_has_no_name_twice() {
    let mut seen = std::collections::BTreeSet::new();
    for n in EFFECTS.iter().map(|e| e.0).chain(READ_ONLY.iter().copied()) {
        assert!(seen.insert(n), "{n} listed twice");
    }
}

/// The table answers as a scan of the two lists in order does.
#[test]
fn lookup_answers_as_the_lists_read_in_order() {
    let scan = |bare: &str| {
        if let Some((_, class, why)) = EFFECTS.iter().find(|(n, _, _)| *n == bare) {
            return Call::Effect(*class, why);
        }
        if READ_ONLY.contains(&bare) {
            return Call::ReadOnly;
        }
        Call::Unlisted
    };
    let names = EFFECTS.iter().map(|e| e.0).chain(READ_ONLY.iter().copied());
    let others = [
        "",
        "my_func",
        "PG_TERMINATE_BACKEND",
        "pg_catalog.count",
        "count ",
    ];
    for name in names.chain(others) {
        assert_eq!(lookup(name), scan(name), "{name}");
    }
}

/// One test per entry of the reviewed table: a call in a plain SELECT,
/// schema-qualified, and hidden in a subquery all carry the entry's class.
#[test]
fn every_side_effect_entry_classifies_as_listed() {
    for (name, class, _) in EFFECTS {
        for sql in [
            format!("SELECT {name}(1)"),
            format!("select pg_catalog.{name}('x', 2)"),
            format!(
                "SELECT * FROM t WHERE id IN (SELECT {} (3))",
                name.to_uppercase()
            ),
            format!("SELECT * FROM {name}('arg')"),
        ] {
            let got = crate::classify::classify(&sql).class();
            assert_eq!(got, *class, "{sql}");
        }
    }
}

#[test]
fn read_only_entries_are_read_and_unlisted_are_unknown() {
    for name in READ_ONLY
        .iter()
        .filter(|n| !matches!(**n, "row" | "array" | "exists"))
    {
        let sql = format!("SELECT {name}(x) FROM t");
        let a = crate::classify::classify(&sql);
        // Some names have special syntax and may not parse with these
        // arguments; what matters is that they never count as unknown
        // functions.
        assert!(
            a.statements.iter().all(|s| s.functions.is_empty()),
            "{sql}: {a:?}"
        );
    }
    let a = crate::classify::classify("SELECT my_func(1)");
    assert_eq!(a.class(), Class::Unknown);
    assert_eq!(a.statements[0].functions, vec!["my_func".to_string()]);
    let a = crate::classify::classify("SELECT \"PG_TERMINATE_BACKEND\"(1)");
    assert_eq!(
        a.class(),
        Class::Unknown,
        "a quoted upper-case name is another function"
    );
}
