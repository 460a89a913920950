//! The reviewed function table. A function call is as dangerous as what the
//! function does, wherever it appears (`SELECT pg_terminate_backend(…)` is a
//! one-line denial of service). Every built-in the classifier knows is listed
//! here once: with its side effect and class, or as free of side effects.
//! Anything else (user-defined functions, built-ins not listed) makes the
//! statement `unknown` unless a role lists the function in `safe_functions`.
//!
//! Names are matched after normalisation: unquoted lowercased, an optional
//! `pg_catalog.` prefix removed. Each `EFFECTS` entry has a test.

use super::Class;

/// Built-ins with side effects: name, class, why.
pub(crate) const EFFECTS: &[(&str, Class, &str)] = &[
    // Other sessions and the server process.
    (
        "pg_terminate_backend",
        Class::Privileged,
        "ends another session",
    ),
    (
        "pg_cancel_backend",
        Class::Privileged,
        "cancels another session's query",
    ),
    (
        "pg_reload_conf",
        Class::Privileged,
        "reloads the server configuration",
    ),
    (
        "pg_rotate_logfile",
        Class::Privileged,
        "rotates the server log",
    ),
    (
        "pg_log_backend_memory_contexts",
        Class::Privileged,
        "writes another backend's memory to the server log",
    ),
    ("pg_promote", Class::Privileged, "promotes a standby"),
    ("pg_switch_wal", Class::Privileged, "forces a WAL switch"),
    (
        "pg_create_restore_point",
        Class::Privileged,
        "creates a WAL restore point",
    ),
    ("pg_backup_start", Class::Privileged, "starts a base backup"),
    ("pg_backup_stop", Class::Privileged, "stops a base backup"),
    ("pg_start_backup", Class::Privileged, "starts a base backup"),
    ("pg_stop_backup", Class::Privileged, "stops a base backup"),
    (
        "pg_create_physical_replication_slot",
        Class::Privileged,
        "creates a replication slot",
    ),
    (
        "pg_create_logical_replication_slot",
        Class::Privileged,
        "creates a replication slot",
    ),
    (
        "pg_drop_replication_slot",
        Class::Privileged,
        "drops a replication slot",
    ),
    (
        "pg_logical_emit_message",
        Class::Privileged,
        "writes into the WAL stream",
    ),
    ("pg_stat_reset", Class::Privileged, "resets statistics"),
    (
        "pg_stat_reset_shared",
        Class::Privileged,
        "resets statistics",
    ),
    (
        "pg_stat_reset_single_table_counters",
        Class::Privileged,
        "resets statistics",
    ),
    ("pg_wal_replay_pause", Class::Privileged, "pauses recovery"),
    (
        "pg_wal_replay_resume",
        Class::Privileged,
        "resumes recovery",
    ),
    // Server-side files.
    (
        "pg_read_file",
        Class::Privileged,
        "reads a file on the database server",
    ),
    (
        "pg_read_binary_file",
        Class::Privileged,
        "reads a file on the database server",
    ),
    (
        "pg_stat_file",
        Class::Privileged,
        "inspects a file on the database server",
    ),
    (
        "pg_ls_dir",
        Class::Privileged,
        "lists a directory on the database server",
    ),
    (
        "pg_ls_logdir",
        Class::Privileged,
        "lists a directory on the database server",
    ),
    (
        "pg_ls_waldir",
        Class::Privileged,
        "lists a directory on the database server",
    ),
    (
        "pg_ls_tmpdir",
        Class::Privileged,
        "lists a directory on the database server",
    ),
    (
        "pg_ls_archive_statusdir",
        Class::Privileged,
        "lists a directory on the database server",
    ),
    (
        "pg_file_write",
        Class::Privileged,
        "writes a file on the database server",
    ),
    (
        "pg_file_rename",
        Class::Privileged,
        "renames a file on the database server",
    ),
    (
        "pg_file_unlink",
        Class::Privileged,
        "deletes a file on the database server",
    ),
    (
        "lo_import",
        Class::Privileged,
        "reads a server file into a large object",
    ),
    (
        "lo_export",
        Class::Privileged,
        "writes a large object to a server file",
    ),
    // Other databases: the statement they run never passes the firewall.
    (
        "dblink",
        Class::Privileged,
        "runs SQL over another connection, out of infraveil's sight",
    ),
    (
        "dblink_exec",
        Class::Privileged,
        "runs SQL over another connection, out of infraveil's sight",
    ),
    (
        "dblink_connect",
        Class::Privileged,
        "opens a connection out of infraveil's sight",
    ),
    (
        "dblink_connect_u",
        Class::Privileged,
        "opens a connection out of infraveil's sight",
    ),
    (
        "dblink_send_query",
        Class::Privileged,
        "runs SQL over another connection, out of infraveil's sight",
    ),
    (
        "dblink_open",
        Class::Privileged,
        "runs SQL over another connection, out of infraveil's sight",
    ),
    // Dynamic SQL: the text they run is data, not something the parser saw.
    (
        "query_to_xml",
        Class::Destructive,
        "executes the SQL text it is given",
    ),
    (
        "query_to_xmlschema",
        Class::Destructive,
        "executes the SQL text it is given",
    ),
    (
        "query_to_xml_and_xmlschema",
        Class::Destructive,
        "executes the SQL text it is given",
    ),
    (
        "cursor_to_xml",
        Class::Destructive,
        "reads from a cursor opened elsewhere",
    ),
    (
        "ts_stat",
        Class::Destructive,
        "executes the SQL text it is given",
    ),
    // Large objects.
    ("lo_unlink", Class::Destructive, "deletes a large object"),
    ("lo_create", Class::Write, "creates a large object"),
    ("lo_creat", Class::Write, "creates a large object"),
    ("lo_from_bytea", Class::Write, "creates a large object"),
    ("lo_put", Class::Write, "writes a large object"),
    ("lowrite", Class::Write, "writes a large object"),
    ("lo_truncate", Class::Write, "truncates a large object"),
    ("lo_truncate64", Class::Write, "truncates a large object"),
    // Sequences, locks, notifications, transaction ids.
    ("nextval", Class::Write, "advances a sequence"),
    ("setval", Class::Write, "sets a sequence"),
    ("pg_advisory_lock", Class::Write, "takes an advisory lock"),
    (
        "pg_advisory_lock_shared",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_advisory_xact_lock",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_advisory_xact_lock_shared",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_try_advisory_lock",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_try_advisory_lock_shared",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_try_advisory_xact_lock",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_try_advisory_xact_lock_shared",
        Class::Write,
        "takes an advisory lock",
    ),
    (
        "pg_advisory_unlock",
        Class::Write,
        "releases an advisory lock",
    ),
    (
        "pg_advisory_unlock_shared",
        Class::Write,
        "releases an advisory lock",
    ),
    (
        "pg_advisory_unlock_all",
        Class::Write,
        "releases advisory locks",
    ),
    ("pg_notify", Class::Write, "notifies other sessions"),
    (
        "txid_current",
        Class::Write,
        "assigns a transaction id (a WAL write)",
    ),
    (
        "pg_current_xact_id",
        Class::Write,
        "assigns a transaction id (a WAL write)",
    ),
];

/// Built-ins known to have no side effects beyond computing a value.
pub(crate) const READ_ONLY: &[&str] = &[
    // Aggregates and windows.
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "grouping",
    // Conditionals and comparison.
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "num_nonnulls",
    "num_nulls",
    // Maths.
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "mod",
    "power",
    "pow",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log10",
    "sign",
    "pi",
    "random",
    "setseed",
    "div",
    "gcd",
    "lcm",
    "width_bucket",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "scale",
    "factorial",
    // Strings.
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "btrim",
    "ltrim",
    "rtrim",
    "trim",
    "lpad",
    "rpad",
    "substr",
    "substring",
    "left",
    "right",
    "position",
    "strpos",
    "replace",
    "translate",
    "reverse",
    "repeat",
    "concat",
    "concat_ws",
    "format",
    "split_part",
    "string_to_array",
    "array_to_string",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "regexp_substr",
    "starts_with",
    "ascii",
    "chr",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "to_hex",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    "convert_from",
    "convert_to",
    "to_ascii",
    "overlay",
    "normalize",
    "unistr",
    "string_to_table",
    // Types and formatting.
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "cast",
    "pg_typeof",
    "format_type",
    "to_regclass",
    "to_regtype",
    "to_regproc",
    "to_regnamespace",
    "to_regrole",
    // Date and time.
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "date_trunc",
    "date_part",
    "date_bin",
    "extract",
    "age",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "timezone",
    "generate_series",
    "pg_sleep",
    "pg_sleep_for",
    // JSON.
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_array_length",
    "jsonb_array_length",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_typeof",
    "jsonb_typeof",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_insert",
    "jsonb_pretty",
    "jsonb_strip_nulls",
    "json_strip_nulls",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_path_exists",
    "jsonb_path_match",
    "json_populate_record",
    "jsonb_populate_record",
    "json_to_record",
    "jsonb_to_record",
    "json_to_recordset",
    "jsonb_to_recordset",
    // Arrays and ranges.
    "array_length",
    "array_upper",
    "array_lower",
    "array_ndims",
    "array_dims",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "array_position",
    "array_positions",
    "cardinality",
    "unnest",
    "array_fill",
    "trim_array",
    "lower_inf",
    "upper_inf",
    "isempty",
    "range_merge",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    // Identifiers, UUIDs, crypto helpers that compute values only.
    "gen_random_uuid",
    // Full-text search.
    "to_tsvector",
    "to_tsquery",
    "plainto_tsquery",
    "phraseto_tsquery",
    "websearch_to_tsquery",
    "ts_rank",
    "ts_rank_cd",
    "ts_headline",
    "setweight",
    "strip",
    "tsvector_to_array",
    "array_to_tsvector",
    "numnode",
    "querytree",
    // Session and catalog information.
    "current_user",
    "session_user",
    "current_role",
    "user",
    "current_catalog",
    "current_schema",
    "current_schemas",
    "current_database",
    "current_setting",
    "version",
    "pg_backend_pid",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_current_wal_lsn",
    "pg_wal_lsn_diff",
    "pg_export_snapshot",
    "pg_current_snapshot",
    "pg_snapshot_xmin",
    "pg_snapshot_xmax",
    "txid_current_snapshot",
    "pg_table_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_size_pretty",
    "pg_size_bytes",
    "pg_column_size",
    "pg_get_viewdef",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_get_functiondef",
    "pg_get_function_arguments",
    "pg_get_function_result",
    "pg_get_function_identity_arguments",
    "pg_get_triggerdef",
    "pg_get_expr",
    "pg_get_userbyid",
    "pg_get_serial_sequence",
    "pg_get_keywords",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "pg_function_is_visible",
    // The rest of the family: SQLAlchemy 2's column reflection calls
    // pg_collation_is_visible, and tools reach for the others the same way.
    "pg_collation_is_visible",
    "pg_conversion_is_visible",
    "pg_operator_is_visible",
    "pg_opclass_is_visible",
    "pg_opfamily_is_visible",
    "pg_statistics_obj_is_visible",
    "pg_ts_config_is_visible",
    "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible",
    "pg_ts_template_is_visible",
    "obj_description",
    "col_description",
    "shobj_description",
    "has_table_privilege",
    "has_column_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_sequence_privilege",
    "pg_has_role",
    "pg_encoding_to_char",
    "pg_char_to_encoding",
    "pg_blocking_pids",
    "pg_trigger_depth",
    "pg_jit_available",
    "pg_listening_channels",
    "pg_notification_queue_usage",
    "pg_my_temp_schema",
    "pg_is_other_temp_schema",
    "pg_tablespace_location",
    "pg_relation_filenode",
    "pg_relation_filepath",
    "pg_index_column_has_property",
    "pg_index_has_property",
    "pg_indexam_has_property",
    "pg_xact_commit_timestamp",
    "txid_status",
    "pg_xact_status",
    "row",
    "array",
    "exists",
    // Catalog lookups psql's \d family and JDBC/DBeaver metadata send.
    "has_any_column_privilege",
    "has_type_privilege",
    "has_language_privilege",
    "has_tablespace_privilege",
    "has_foreign_data_wrapper_privilege",
    "has_server_privilege",
    "has_parameter_privilege",
    "pg_get_statisticsobjdef",
    "pg_get_statisticsobjdef_columns",
    "pg_get_statisticsobjdef_expressions",
    "pg_get_partkeydef",
    "pg_get_ruledef",
    "pg_get_function_sqlbody",
    "pg_partition_ancestors",
    "pg_partition_tree",
    "pg_partition_root",
    "pg_relation_is_publishable",
    "generate_subscripts",
    // Only ever information_schema's own helper: nobody but its owner (the
    // bootstrap superuser) can create functions in that schema.
    "information_schema._pg_expandarray",
    // Function-style casts to built-in types (`date(x)`, `text(x)`).
    "date",
    "text",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "bool",
    "varchar",
    "timestamp",
    "timestamptz",
    // What PostgreSQL's grammar turns SQL-standard syntax into.
    "like_escape",
    "similar_to_escape",
    "similar_escape",
    "is_normalized",
    "system_user",
    "pg_collation_for",
    "xmlexists",
    "txid_current_if_assigned",
    // Aggregates.
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "regr_avgx",
    "regr_avgy",
    "regr_sxx",
    "regr_syy",
    "regr_sxy",
    "xmlagg",
    // Sequence state of this session; they change nothing.
    "currval",
    "lastval",
];

/// What a call to `name` (already normalised) does.
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

/// `name` is normalised and without a `pg_catalog.` prefix.
pub(crate) fn lookup(bare: &str) -> Call {
    if let Some((_, class, why)) = EFFECTS.iter().find(|(n, _, _)| *n == bare) {
        return Call::Effect(*class, why);
    }
    if READ_ONLY.contains(&bare) {
        return Call::ReadOnly;
    }
    Call::Unlisted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_name_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for n in EFFECTS.iter().map(|e| e.0).chain(READ_ONLY.iter().copied()) {
            assert!(seen.insert(n), "{n} listed twice");
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
}
