//! The reviewed function table. A function call is as dangerous as what the
//! function does, wherever it appears (`SELECT pg_terminate_backend(…)` is a
//! one-line denial of service). Every built-in the classifier knows is listed
//! here once: with its side effect and class, or as free of side effects.
//! Anything else (user-defined functions, built-ins not listed) makes the
//! statement `unknown` unless a role lists the function in `safe_functions`.
//!
//! Names are matched after normalisation: unquoted lowercased, an optional
//! `pg_catalog.` prefix removed. Each `EFFECTS` entry has a test.

mod effects;
mod read_only;

use std::collections::HashMap;
use std::sync::LazyLock;

use super::Class;

pub(crate) use effects::EFFECTS;
pub(crate) use read_only::READ_ONLY;

/// What a call to `name` (already normalised) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    ReadOnly,
    Effect(Class, &'static str),
    /// Not in the table: `unknown` unless a policy lists it as safe.
    Unlisted,
}

/// Names sqlparser reads as calls but PostgreSQL's grammar reads as syntax
/// (`COALESCE(…)` is a `CoalesceExpr`): pg_catalog has no function of the
/// name, so a call PostgreSQL reads as one (`"coalesce"(1)`) can only reach
/// a user's function.
pub(crate) const SYNTAX_NOT_FUNCTIONS: &[&str] = &[
    "grouping",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "trim",
    "cast",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "current_role",
    "user",
    "current_catalog",
    "row",
    "array",
    "exists",
];

/// A function whose effect stays when the transaction that called it rolls
/// back: sequence changes, and work done over another connection.
pub fn outlives_rollback(name: &str) -> bool {
    matches!(name, "nextval" | "setval")
        || name.starts_with("dblink")
        || name.starts_with("pg_background")
}

/// Every reviewed name and what a call to it does, built once: each call
/// in each statement is looked up, and a scan compared it with ~470 names
/// (issue 16). The first entry of a name wins, as in the scan this replaced
/// (`EFFECTS` before `READ_ONLY`), though `table_has_no_name_twice` keeps
/// names unique anyway.
static TABLE: LazyLock<HashMap<&'static str, Call>> = LazyLock::new(|| {
    let mut table = HashMap::with_capacity(EFFECTS.len() + READ_ONLY.len());
    for &(name, class, why) in EFFECTS {
        table.entry(name).or_insert(Call::Effect(class, why));
    }
    for &name in READ_ONLY {
        table.entry(name).or_insert(Call::ReadOnly);
    }
    table
});

/// `name` is normalised and without a `pg_catalog.` prefix.
pub(crate) fn lookup(bare: &str) -> Call {
    TABLE.get(bare).copied().unwrap_or(Call::Unlisted)
}

#[cfg(test)]
mod tests;
