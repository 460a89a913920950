//! Run-time settings (`SET`, `RESET`, `set_config`). Most only tune the
//! session; a few change who the session is, how PostgreSQL reads the next
//! statement, or which table an unqualified name means. Only settings on the
//! allow-list below are `read`; everything else is `privileged` (fail closed:
//! a new or custom setting is assumed dangerous until reviewed).

use super::Class;

/// Settings that only tune the current session.
const HARMLESS: &[&str] = &[
    "application_name",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "timezone",
    "time zone",
    "datestyle",
    "intervalstyle",
    "extra_float_digits",
    "bytea_output",
    "client_min_messages",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
    "work_mem",
    "maintenance_work_mem",
    "temp_buffers",
    "hash_mem_multiplier",
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "effective_cache_size",
    "effective_io_concurrency",
    "jit",
    "jit_above_cost",
    "max_parallel_workers_per_gather",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "plan_cache_mode",
    "geqo",
    "from_collapse_limit",
    "join_collapse_limit",
    "constraint_exclusion",
    "cursor_tuple_fraction",
    "default_statistics_target",
    "enable_seqscan",
    "enable_indexscan",
    "enable_indexonlyscan",
    "enable_bitmapscan",
    "enable_hashjoin",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_hashagg",
    "enable_sort",
    "enable_material",
    "enable_partitionwise_join",
    "enable_partitionwise_aggregate",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_text_search_config",
    "row_security",
    "check_function_bodies",
    "xmlbinary",
    "xmloption",
    "array_nulls",
    "quote_all_identifiers",
    "synchronous_commit",
    "escape_string_warning",
    "gin_fuzzy_search_limit",
    "default_toast_compression",
    "vacuum_cost_delay",
    "vacuum_cost_limit",
];

/// Why a setting outside the allow-list is dangerous, where we know.
fn danger(name: &str) -> &'static str {
    match name {
        "role" | "session_authorization" => "changes the role the session acts as",
        "search_path" => {
            "changes which schema unqualified names resolve to, so table scopes could be bypassed"
        }
        "client_encoding" | "names" => {
            "changes how PostgreSQL decodes the next statements, so they could read differently to infraveil"
        }
        "standard_conforming_strings" | "backslash_quote" => {
            "changes how PostgreSQL reads string literals, so statements could read differently to infraveil"
        }
        "session_replication_role" => "disables triggers and foreign-key checks",
        _ if name.contains('.') => {
            "is a custom setting; row-level security policies often trust these"
        }
        _ => "is not on infraveil's list of settings that only tune the session",
    }
}

/// Settings that are safe at the values infraveil itself relies on (and on
/// `RESET`, which returns to the vetted start-up value).
fn safe_value(name: &str, values: Option<&[String]>) -> bool {
    let Some(values) = values else {
        return matches!(
            name,
            "standard_conforming_strings" | "client_encoding" | "names" | "search_path"
        );
    };
    let all = |ok: &dyn Fn(&str) -> bool| {
        !values.is_empty() && values.iter().all(|v| ok(&v.to_ascii_lowercase()))
    };
    match name {
        "standard_conforming_strings" => {
            all(&|v| matches!(v, "on" | "true" | "1" | "yes" | "default"))
        }
        "client_encoding" | "names" => all(&names_utf8),
        "search_path" => harmless_search_path(values),
        _ => false,
    }
}

/// Whether PostgreSQL reads `name` as the encoding UTF8. `client_encoding`
/// is a name-like setting (`GUC_IS_NAME`), so PostgreSQL first cuts the
/// value to 63 bytes (`NAMEDATALEN - 1`, with a NOTICE); then
/// `pg_char_to_encoding` looks at ASCII letters and digits only, case
/// folded. So `UTF8`, `utf-8`, `'utf-8'` (asyncpg's quotes included),
/// `Utf_8` and `unicode` all are UTF8, and `utf-16`, `LATIN1` or a `utf8`
/// pushed past byte 63 are not. Bytes outside ASCII are dropped here, as
/// PostgreSQL drops them under a C or UTF-8 locale; under a single-byte
/// locale it may keep them and then find no encoding at all, an error,
/// never another encoding. One rule for start-up parameters, `SET`,
/// `set_config` and what PostgreSQL reports back.
pub fn names_utf8(name: &str) -> bool {
    let key = encoding_key(name);
    key == b"utf8" || key == b"unicode"
}

/// Whether PostgreSQL reads `name` as SQL_ASCII (what psql asks for under
/// a C locale), by the same folding as [`names_utf8`].
pub fn names_sql_ascii(name: &str) -> bool {
    encoding_key(name) == b"sqlascii"
}

/// The letters and digits `pg_char_to_encoding` compares, folded.
fn encoding_key(name: &str) -> Vec<u8> {
    const NAME_BYTES: usize = 63;
    name.bytes()
        .take(NAME_BYTES)
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// Only the default path, optionally behind an explicit `pg_catalog`:
/// anything else can make `orders` mean another schema's table, and a path
/// with `pg_catalog` after another schema lets that schema's functions and
/// operators replace built-ins. Compared exactly: `"Public"` is not
/// `public`, and nothing here folds case (an unquoted identifier reaches
/// this already folded; a string keeps its case in PostgreSQL too).
fn harmless_search_path(values: &[String]) -> bool {
    let path: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|p| match p.trim() {
            "\"$user\"" => "$user",
            other => other,
        })
        .collect();
    let rest = match path.as_slice() {
        ["pg_catalog", rest @ ..] => rest,
        all => all,
    };
    // An empty path (`''`, as pg_dump sets it) leaves only pg_catalog.
    let empty = !path.is_empty() && path.iter().all(|p| p.is_empty());
    empty
        || matches!(
            rest,
            ["$user", "public"] | ["public"] | ["$user"] | ["default"] | []
        ) && !path.is_empty()
}

/// Class of changing `name` (case-insensitive, as PostgreSQL treats it) to
/// `values` (`None` for `RESET`).
pub(crate) fn classify(name: &str, values: Option<&[String]>) -> (Class, String) {
    let lower = name.to_ascii_lowercase();
    if safe_value(&lower, values) {
        return (
            Class::Read,
            format!("sets {lower} to a value infraveil expects"),
        );
    }
    if HARMLESS.contains(&lower.as_str()) {
        (
            Class::Read,
            format!("sets {lower}, which only tunes this session"),
        )
    } else {
        (
            Class::Privileged,
            format!("setting {lower} {}", danger(&lower)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_path_and_encoding_are_privileged_and_tuning_is_read() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for n in [
            "role",
            "Session_Authorization",
            "search_path",
            "client_encoding",
            "app.tenant",
            "standard_conforming_strings",
            "log_statement",
        ] {
            assert_eq!(classify(n, Some(&v(&["x"]))).0, Class::Privileged, "{n}");
        }
        for n in [
            "statement_timeout",
            "TimeZone",
            "application_name",
            "work_mem",
        ] {
            assert_eq!(classify(n, Some(&v(&["1"]))).0, Class::Read, "{n}");
        }
        let on = |n: &str, x: &[&str]| classify(n, Some(&v(x))).0;
        assert_eq!(on("standard_conforming_strings", &["on"]), Class::Read);
        assert_eq!(
            on("standard_conforming_strings", &["off"]),
            Class::Privileged
        );
        assert_eq!(on("client_encoding", &["UTF8"]), Class::Read);
        assert_eq!(on("client_encoding", &["SJIS"]), Class::Privileged);
        assert_eq!(on("client_encoding", &["'utf-8'"]), Class::Read);
        assert_eq!(on("names", &["Utf_8"]), Class::Read);
        assert_eq!(on("client_encoding", &["utf-16"]), Class::Privileged);
        assert_eq!(on("search_path", &["$user", "public"]), Class::Read);
        assert_eq!(on("search_path", &["billing", "public"]), Class::Privileged);
        assert_eq!(on("search_path", &["Public"]), Class::Privileged);
        assert_eq!(
            on("search_path", &["public", "pg_catalog"]),
            Class::Privileged
        );
        assert_eq!(
            on("search_path", &["$user", "public", "pg_catalog"]),
            Class::Privileged
        );
        assert_eq!(
            on("search_path", &["pg_catalog", "$user", "public"]),
            Class::Read
        );
        assert_eq!(on("search_path", &["\"$user\", public"]), Class::Read);
        assert_eq!(on("search_path", &["public, evil"]), Class::Privileged);
        assert_eq!(
            on("search_path", &[""]),
            Class::Read,
            "pg_dump's empty path"
        );
        assert_eq!(on("search_path", &["", "evil"]), Class::Privileged);
        assert_eq!(classify("search_path", None).0, Class::Read);
        assert_eq!(classify("role", None).0, Class::Privileged);
    }
}

#[cfg(test)]
mod encoding_names {
    use super::names_utf8;

    /// The live check against PostgreSQL's own answer is
    /// `tests/startup_params.rs`; these are the cases that explain the rule.
    #[test]
    fn utf8_spellings_by_postgres_rule() {
        for yes in [
            "UTF8",
            "utf8",
            "utf-8",
            "UTF_8",
            "'utf-8'",
            "\"UTF8\"",
            " utf 8 ",
            "Unicode",
            "UNICODE",
            "u.t.f.8",
            "utf\u{e9}8",
        ] {
            assert!(names_utf8(yes), "{yes:?}");
        }
        let late = format!("{}utf8", "-".repeat(60));
        for no in [
            "",
            "utf",
            "utf16",
            "utf-16",
            "utf8mb4",
            "utf88",
            "LATIN1",
            "SQL_ASCII",
            "default",
            "auto",
            "uni code8",
            &late,
        ] {
            assert!(!names_utf8(no), "{no:?}");
        }
        // Cut to 63 bytes first: what follows never counts.
        assert!(names_utf8(&format!("utf8{}", "-".repeat(300))));
        assert!(names_utf8(&format!("{}utf8{}", "-".repeat(59), "16")));
    }
}
