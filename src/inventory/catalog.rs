//! What PostgreSQL itself lets an upstream user do, read from the catalog.
//!
//! The firewall logs in as the user itself (so `has_table_privilege` and
//! friends answer for it, memberships and `PUBLIC` grants included), opens
//! a `READ ONLY` transaction with a short statement timeout and only runs
//! catalog queries: no table is scanned, row counts are the planner's
//! statistics (`reltuples`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::upstream::{Rows, Upstream, UpstreamConnector, UpstreamError};

/// Tables and column grants listed at most per user.
pub const MAX_TABLES: usize = 1000;
const MAX_COLUMN_GRANTS: usize = 2000;
/// Longest the whole look may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Table privileges asked about, in `has_table_privilege`'s words.
pub const TABLE_PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];
const COLUMN_PRIVILEGES: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "REFERENCES"];

/// Everything PostgreSQL grants one user in one database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PgUser {
    pub user: String,
    pub database: String,
    pub superuser: bool,
    pub bypassrls: bool,
    pub createrole: bool,
    pub createdb: bool,
    pub replication: bool,
    /// Roles it is a member of, directly or through others.
    pub member_of: Vec<String>,
    /// `CREATE` on the database: it may create schemas.
    pub create_on_database: bool,
    /// Schemas it may create objects in.
    pub create_in_schemas: Vec<String>,
    pub tables: Vec<PgTable>,
    /// More than [`MAX_TABLES`] tables exist; only the first are listed.
    pub tables_truncated: bool,
}

/// One table (or view, …) and what the user may do with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PgTable {
    pub schema: String,
    pub name: String,
    /// `table`, `partitioned table`, `view`, `materialized view`, `foreign table`.
    pub kind: String,
    pub owner: String,
    /// The user owns it (or is a member of its owner): it may `DROP` and
    /// `ALTER` it, whatever the grants say.
    pub owned: bool,
    /// Table-level privileges held, in [`TABLE_PRIVILEGES`] order.
    pub privileges: Vec<String>,
    /// Column-level grants beyond the table-level ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_privileges: Vec<ColumnPrivilege>,
    /// The planner's estimate; `None` for a table never analysed (or a view).
    pub rows_estimate: Option<i64>,
    pub size_bytes: i64,
    pub row_security: bool,
    /// `USAGE` on the schema: without it PostgreSQL refuses every name in
    /// it, whatever the table's grants say.
    pub schema_usage: bool,
}

impl PgTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The table-level privilege, usable (the schema is reachable).
    pub fn has(&self, privilege: &str) -> bool {
        self.schema_usage && self.privileges.iter().any(|p| p == privilege)
    }

    /// The privilege, on the table or on some of its columns.
    pub fn has_any(&self, privilege: &str) -> bool {
        self.has(privilege)
            || (self.schema_usage
                && self
                    .column_privileges
                    .iter()
                    .any(|c| c.privileges.iter().any(|p| p == privilege)))
    }

    /// Owns it and can reach it by name.
    pub fn owns(&self) -> bool {
        self.schema_usage && self.owned
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ColumnPrivilege {
    pub column: String,
    pub privileges: Vec<String>,
}

/// Log in as `user` to `database` and read what it may do.
pub async fn inspect(
    upstream: &UpstreamConnector,
    user: &str,
    database: &str,
) -> Result<PgUser, UpstreamError> {
    match tokio::time::timeout(TIMEOUT, read(upstream, user, database)).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Query(format!(
            "reading the catalog as {user} took longer than {}s",
            TIMEOUT.as_secs()
        ))),
    }
}

async fn read(
    upstream: &UpstreamConnector,
    user: &str,
    database: &str,
) -> Result<PgUser, UpstreamError> {
    let params = [
        ("database".to_owned(), database.to_owned()),
        (
            "application_name".to_owned(),
            "infraveil-inventory".to_owned(),
        ),
    ];
    let mut conn = upstream.connect(user, &params).await?;
    conn.simple_query("BEGIN READ ONLY").await?;
    conn.simple_query("SET LOCAL statement_timeout = '5s'")
        .await?;
    let mut out = attributes(&mut conn, user, database).await?;
    out.member_of = column(
        conn.simple_query(
            "SELECT b.rolname FROM pg_roles b \
             WHERE b.rolname <> current_user AND pg_has_role(current_user, b.oid, 'MEMBER') \
             ORDER BY 1",
        )
        .await?,
    );
    out.create_in_schemas = column(
        conn.simple_query(&format!(
            "SELECT n.nspname FROM pg_namespace n \
             WHERE has_schema_privilege(n.oid, 'CREATE') AND {USER_SCHEMA} ORDER BY 1"
        ))
        .await?,
    );
    let (tables, truncated) = tables(&mut conn).await?;
    out.tables = tables;
    out.tables_truncated = truncated;
    columns(&mut conn, &mut out.tables).await?;
    let _ = conn.simple_query("ROLLBACK").await;
    Ok(out)
}

/// Schemas of the user's data, not PostgreSQL's own (`n` is pg_namespace).
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_%'";

async fn attributes(
    conn: &mut Upstream,
    user: &str,
    database: &str,
) -> Result<PgUser, UpstreamError> {
    let rows = conn
        .simple_query(
            "SELECT rolsuper::text, rolbypassrls::text, rolcreaterole::text, \
             rolcreatedb::text, rolreplication::text, \
             has_database_privilege(current_database(), 'CREATE')::text \
             FROM pg_roles WHERE rolname = current_user",
        )
        .await?;
    let row = rows.first().ok_or_else(|| {
        UpstreamError::Query(format!("pg_roles has no row for {user} (dropped?)"))
    })?;
    let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("true");
    Ok(PgUser {
        user: user.to_owned(),
        database: database.to_owned(),
        superuser: flag(0),
        bypassrls: flag(1),
        createrole: flag(2),
        createdb: flag(3),
        replication: flag(4),
        create_on_database: flag(5),
        ..PgUser::default()
    })
}

async fn tables(conn: &mut Upstream) -> Result<(Vec<PgTable>, bool), UpstreamError> {
    let privs: String = TABLE_PRIVILEGES
        .iter()
        .map(|p| format!(", has_table_privilege(c.oid, '{p}')::text"))
        .collect();
    let rows = conn
        .simple_query(&format!(
            "SELECT n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner), \
             pg_has_role(c.relowner, 'USAGE')::text, \
             CASE WHEN c.reltuples < 0 OR c.relkind IN ('v', 'f') THEN NULL \
             ELSE c.reltuples::bigint END, \
             pg_total_relation_size(c.oid), c.relrowsecurity::text, \
             has_schema_privilege(n.oid, 'USAGE')::text{privs} \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMA} \
             ORDER BY 1, 2 LIMIT {}",
            MAX_TABLES + 1
        ))
        .await?;
    let truncated = rows.len() > MAX_TABLES;
    let tables = rows
        .iter()
        .take(MAX_TABLES)
        .map(|row| {
            let field = |i: usize| row.get(i).cloned().flatten();
            let flag = |i: usize| field(i).as_deref() == Some("true");
            PgTable {
                schema: field(0).unwrap_or_default(),
                name: field(1).unwrap_or_default(),
                kind: relkind(field(2).as_deref().unwrap_or("")).to_owned(),
                owner: field(3).unwrap_or_default(),
                owned: flag(4),
                rows_estimate: field(5).and_then(|v| v.parse().ok()),
                size_bytes: field(6).and_then(|v| v.parse().ok()).unwrap_or(0),
                row_security: flag(7),
                schema_usage: flag(8),
                privileges: TABLE_PRIVILEGES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| flag(9 + i))
                    .map(|(_, p)| (*p).to_owned())
                    .collect(),
                column_privileges: Vec::new(),
            }
        })
        .collect();
    Ok((tables, truncated))
}

/// Column grants (`GRANT UPDATE (status) ON …`) the table-level privileges
/// do not already cover.
async fn columns(conn: &mut Upstream, tables: &mut [PgTable]) -> Result<(), UpstreamError> {
    let privs: String = COLUMN_PRIVILEGES
        .iter()
        .map(|p| format!(", has_column_privilege(c.oid, a.attnum, '{p}')::text"))
        .collect();
    let rows = conn
        .simple_query(&format!(
            "SELECT n.nspname, c.relname, a.attname{privs} \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL \
             AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMA} \
             ORDER BY 1, 2, a.attnum LIMIT {MAX_COLUMN_GRANTS}"
        ))
        .await?;
    for row in &rows {
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (schema, name) = (field(0), field(1));
        let Some(table) = tables
            .iter_mut()
            .find(|t| t.schema == schema && t.name == name)
        else {
            continue;
        };
        let extra: Vec<String> = COLUMN_PRIVILEGES
            .iter()
            .enumerate()
            .filter(|(i, p)| field(3 + i) == "true" && !table.privileges.iter().any(|t| t == *p))
            .map(|(_, p)| (*p).to_owned())
            .collect();
        if !extra.is_empty() {
            table.column_privileges.push(ColumnPrivilege {
                column: field(2),
                privileges: extra,
            });
        }
    }
    Ok(())
}

fn relkind(k: &str) -> &'static str {
    match k {
        "r" => "table",
        "p" => "partitioned table",
        "v" => "view",
        "m" => "materialized view",
        "f" => "foreign table",
        _ => "relation",
    }
}

fn column(rows: Rows) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
}
