//! The reviewed built-ins that do something besides computing a value, each
//! with the class that makes and why. `every_side_effect_entry_classifies_as_listed`
//! (in `tests.rs`) checks each entry.

use crate::classify::Class;

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
