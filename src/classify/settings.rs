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
        "client_encoding" | "names" => {
            all(&|v| matches!(v, "utf8" | "utf-8" | "unicode" | "default"))
        }
        "search_path" => harmless_search_path(values),
        _ => false,
    }
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
