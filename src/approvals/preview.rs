//! Blast-radius preview: what a held statement would do, shown to the
//! approver before they decide. Computed on a separate upstream connection
//! as the role's own upstream user, inside a `READ ONLY` transaction with a
//! short statement timeout, and never with `EXPLAIN ANALYZE`: the preview can
//! read the catalog and ask the planner, nothing else.
//!
//! Each figure says how sure it is (exact count, statistics, planner), and
//! what a row count alone does not show is listed beside it: foreign keys
//! that cascade, triggers, rules and row-level security on the tables a
//! statement changes.

use std::time::Duration;

use crate::classify::TableName;
use crate::upstream::plan::{Change, modifications, planned_rows, quote_relation};
use crate::upstream::{Rows, Upstream, UpstreamConnector, UpstreamError};

/// Longest a whole preview may take; the request is sent without one after.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Tables looked at per statement, and dependent objects listed per table.
const MAX_TABLES: usize = 10;
const MAX_DEPENDENTS: usize = 20;

/// Lines describing the blast radius, for the message and the page.
pub async fn preview(
    upstream: &UpstreamConnector,
    user: &str,
    database: &str,
    sql: &str,
    tables: &[TableName],
) -> Vec<String> {
    match tokio::time::timeout(
        PREVIEW_TIMEOUT,
        compute(upstream, user, database, sql, tables),
    )
    .await
    {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => vec![format!("preview unavailable: {e}")],
        Err(_) => vec!["preview unavailable: timed out".to_owned()],
    }
}

/// Tables up to this size (heap only) are counted exactly.
const EXACT_COUNT_MAX_BYTES: i64 = 64 << 20;

/// How many rows a table has, and how sure the figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Exact(i64),
    /// From `ANALYZE`'s statistics (`reltuples`).
    Statistics(i64),
    /// The planner's guess for a never-analysed table (from its pages).
    Planner(i64),
    Unknown,
}

impl Count {
    fn describe(self) -> String {
        match self {
            Count::Exact(n) => format!("{} (exact count)", rows(n)),
            Count::Statistics(n) => format!("about {} (estimate from statistics)", rows(n)),
            Count::Planner(n) => format!(
                "about {} (planner estimate; the table was never analysed)",
                rows(n)
            ),
            Count::Unknown => "row count unknown".to_owned(),
        }
    }
}

/// "1 row", "12 rows".
fn rows(n: i64) -> String {
    if n == 1 {
        "1 row".to_owned()
    } else {
        format!("{n} rows")
    }
}

/// What the catalog says about one table the statement names.
struct Facts<'a> {
    table: &'a TableName,
    oid: String,
    count: Count,
    rls: bool,
}

async fn compute(
    upstream: &UpstreamConnector,
    user: &str,
    database: &str,
    sql: &str,
    tables: &[TableName],
) -> Result<Vec<String>, UpstreamError> {
    let params = [
        ("database".to_owned(), database.to_owned()),
        (
            "application_name".to_owned(),
            "infraveil-preview".to_owned(),
        ),
    ];
    let mut conn = upstream.connect(user, &params).await?;
    conn.simple_query("BEGIN READ ONLY").await?;
    conn.simple_query("SET LOCAL statement_timeout = '3s'")
        .await?;
    let keywords = crate::classify::leading_keywords(sql).unwrap_or_default();
    let dropping = keywords.iter().any(|k| k == "DROP");
    let truncating = keywords.iter().any(|k| k == "TRUNCATE");

    let mut table_lines = Vec::new();
    let mut facts: Vec<Facts<'_>> = Vec::new();
    for table in tables.iter().take(MAX_TABLES) {
        if let Some(f) =
            describe_table(&mut conn, table, (dropping, truncating), &mut table_lines).await?
        {
            facts.push(f);
        }
    }

    let mut lines = Vec::new();
    let single = keywords.len() == 1;
    let first = keywords.first().map(String::as_str).unwrap_or("");
    if single && matches!(first, "DELETE" | "UPDATE" | "WITH" | "MERGE" | "INSERT") {
        lines.extend(planned_changes(&mut conn, sql, first, &facts).await?);
    }
    lines.extend(table_lines);
    let _ = conn.simple_query("ROLLBACK").await;
    if lines.is_empty() {
        lines.push("no estimate for this kind of statement".to_owned());
    }
    Ok(lines)
}

/// One table's lines (count, size, what a DROP or TRUNCATE takes with it)
/// and its facts; `None` if PostgreSQL does not show it to this role.
async fn describe_table<'a>(
    conn: &mut crate::upstream::Upstream,
    table: &'a TableName,
    (dropping, truncating): (bool, bool),
    lines: &mut Vec<String>,
) -> Result<Option<Facts<'a>>, UpstreamError> {
    let regclass = regclass(table);
    let found = conn
        .simple_query(&format!(
            "SELECT c.reltuples::bigint, pg_size_pretty(pg_total_relation_size(c.oid)), \
             c.relkind::text, pg_relation_size(c.oid), c.oid::text, c.relrowsecurity::text \
             FROM pg_class c WHERE c.oid = {regclass}"
        ))
        .await?;
    let Some(row) = found.first() else {
        lines.push(format!(
            "{table}: does not exist (or is not visible to this role)"
        ));
        return Ok(None);
    };
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let size = field(1);
    let kind = field(2);
    let heap: i64 = field(3).parse().unwrap_or(i64::MAX);
    let reltuples: i64 = field(0).parse().unwrap_or(-1);
    let oid = field(4);
    let rls = field(5) == "true";
    let quoted = quote_relation(&table.schema, &table.name);
    let mut count = Count::Unknown;
    // Partitioned tables keep no heap of their own: count them too, the
    // timeout bounds it.
    if (kind == "r" || kind == "m" || kind == "p")
        && (heap <= EXACT_COUNT_MAX_BYTES || kind == "p")
        && let Some(n) = exact_count(conn, &quoted).await?
    {
        count = Count::Exact(n);
    }
    if count == Count::Unknown {
        count = if reltuples >= 0 {
            Count::Statistics(reltuples)
        } else {
            let q = format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {quoted}");
            match conn.simple_query(&q).await {
                Ok(r) => planned_rows(&r).map_or(Count::Unknown, Count::Planner),
                Err(UpstreamError::Query(_)) => Count::Unknown,
                Err(e) => return Err(e),
            }
        };
    }
    if kind == "v" {
        lines.push(format!("{table}: a view"));
    } else if rls {
        lines.push(format!(
            "{table}: {} that this role may read (row-level security is on), {size}",
            count.describe()
        ));
    } else {
        lines.push(format!("{table}: {}, {size}", count.describe()));
    }
    if dropping {
        let names = first_column(
            conn.simple_query(&dependents_query(&regclass, MAX_DEPENDENTS + 1))
                .await?,
        );
        if !names.is_empty() {
            lines.push(format!(
                "  depended on by: {} (DROP … CASCADE drops them too; without CASCADE the DROP fails)",
                listed(&names)
            ));
        }
    } else if truncating {
        let names = first_column(
            conn.simple_query(&format!(
                "SELECT DISTINCT conrelid::regclass::text FROM pg_constraint \
                 WHERE contype = 'f' AND confrelid = {regclass} AND conrelid <> {regclass} \
                 ORDER BY 1 LIMIT {}",
                MAX_DEPENDENTS + 1
            ))
            .await?,
        );
        if !names.is_empty() {
            lines.push(format!(
                "  referenced by: {} (TRUNCATE … CASCADE empties them too; without CASCADE the TRUNCATE fails)",
                listed(&names)
            ));
        }
    }
    Ok(Some(Facts {
        table,
        oid,
        count,
        rls,
    }))
}

/// What the planner says one data-changing statement changes, and what
/// fires with it.
async fn planned_changes(
    conn: &mut crate::upstream::Upstream,
    sql: &str,
    first: &str,
    facts: &[Facts<'_>],
) -> Result<Vec<String>, UpstreamError> {
    let mut lines = Vec::new();
    // One statement, proven by the same lexer that split it: EXPLAIN
    // cannot be made to run a second one.
    match conn
        .simple_query(&format!("EXPLAIN (FORMAT JSON, VERBOSE) {sql}"))
        .await
    {
        Ok(plan) => {
            let changes = modifications(&plan);
            if changes.is_empty() {
                lines.push(format!("{first}: the planner shows no table it changes"));
            }
            for m in &changes {
                lines.push(describe_change(m, facts));
                let oid = match facts.iter().find(|f| same(f.table, m)) {
                    Some(f) => f.oid.clone(),
                    None => oid_of(conn, &m.schema, &m.relation).await?,
                };
                if !oid.is_empty() {
                    lines.extend(side_effects(conn, &oid, &m.operation).await?);
                }
            }
        }
        Err(UpstreamError::Query(m)) => lines.push(format!("{first}: no estimate ({m})")),
        Err(e) => return Err(e),
    }
    Ok(lines)
}

/// `to_regclass` of a table, built from its two parts (a schema may hold a
/// dot).
fn regclass(t: &TableName) -> String {
    format!(
        "to_regclass(format('%I.%I', {}, {}))",
        literal(&t.schema),
        literal(&t.name)
    )
}

fn same(t: &TableName, m: &Change) -> bool {
    t.schema == m.schema && t.name == m.relation
}

async fn oid_of(
    conn: &mut Upstream,
    schema: &str,
    relation: &str,
) -> Result<String, UpstreamError> {
    let t = TableName::new(schema, relation);
    let rows = conn
        .simple_query(&format!("SELECT {}::oid::text", regclass(&t)))
        .await?;
    Ok(first_column(rows).into_iter().next().unwrap_or_default())
}

/// One line for one table a statement changes.
fn describe_change(m: &Change, facts: &[Facts<'_>]) -> String {
    let verb = m.operation.to_uppercase();
    let t = format!("{}.{}", m.schema, m.relation);
    let known = facts.iter().find(|f| same(f.table, m));
    match (m.whole, known) {
        // Every row of one table, counted, and no policy hides any of them
        // from the count: say so exactly.
        (
            true,
            Some(Facts {
                rls: false,
                count: Count::Exact(n),
                ..
            }),
        ) => format!("{verb} would affect all {} of {t} (exact count)", rows(*n)),
        (true, _) => format!("{verb} would affect every row of {t}"),
        (false, _) => match m.rows {
            Some(n) => format!(
                "{verb} on {t} would affect about {} (planner estimate)",
                rows(n)
            ),
            None => format!("{verb} on {t}: the planner gave no row estimate"),
        },
    }
}

/// What a change to table `oid` does beyond its own rows: foreign keys
/// that cascade into other tables, triggers, rules, row-level security.
async fn side_effects(
    conn: &mut Upstream,
    oid: &str,
    operation: &str,
) -> Result<Vec<String>, UpstreamError> {
    let mut out = Vec::new();
    // pg_trigger.tgtype bits: INSERT 4, DELETE 8, UPDATE 16.
    let (bits, fk_action) = match operation {
        "Delete" => (8, Some("confdeltype")),
        "Update" => (16, Some("confupdtype")),
        "Insert" => (4, None),
        _ => (4 | 8 | 16, Some("confdeltype")),
    };
    if let Some(col) = fk_action {
        let rows = conn
            .simple_query(&format!(
                "SELECT conrelid::regclass::text || ' (' || CASE {col} WHEN 'c' THEN 'ON {on} CASCADE' \
                 WHEN 'n' THEN 'ON {on} SET NULL' ELSE 'ON {on} SET DEFAULT' END || ', about ' || \
                 GREATEST(c.reltuples, 0)::bigint || ' rows)' FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
                 WHERE k.contype = 'f' AND k.confrelid = {oid} AND k.{col} IN ('c', 'n', 'd') ORDER BY 1 LIMIT {}",
                MAX_DEPENDENTS + 1,
                on = if col == "confdeltype" { "DELETE" } else { "UPDATE" },
            ))
            .await?;
        let names = first_column(rows);
        if !names.is_empty() {
            out.push(format!(
                "  also changes rows of: {} through foreign keys",
                listed(&names)
            ));
        }
    }
    let triggers = first_column(
        conn.simple_query(&format!(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = {oid} AND NOT tgisinternal \
             AND tgenabled <> 'D' AND (tgtype & {bits}) <> 0 ORDER BY 1 LIMIT {}",
            MAX_DEPENDENTS + 1
        ))
        .await?,
    );
    if !triggers.is_empty() {
        out.push(format!(
            "  triggers run too (what they do is not counted here): {}",
            listed(&triggers)
        ));
    }
    let rules = first_column(
        conn.simple_query(&format!(
            "SELECT rulename FROM pg_rewrite WHERE ev_class = {oid} AND rulename <> '_RETURN' ORDER BY 1 LIMIT {}",
            MAX_DEPENDENTS + 1
        ))
        .await?,
    );
    if !rules.is_empty() {
        out.push(format!(
            "  rules rewrite the statement (it may do something else entirely): {}",
            listed(&rules)
        ));
    }
    let rls = first_column(
        conn.simple_query(&format!(
            "SELECT relrowsecurity::text FROM pg_class WHERE oid = {oid}"
        ))
        .await?,
    );
    if rls.first().is_some_and(|r| r == "true") {
        out.push(
            "  row-level security is on: which rows it may change follows the role's policies for this command, not what it may read"
                .to_owned(),
        );
    }
    Ok(out)
}

/// `count(*)` of a table, as the role's user, if it takes under half a
/// second; `None` if it is refused or too slow (the caller estimates).
async fn exact_count(
    conn: &mut crate::upstream::Upstream,
    quoted: &str,
) -> Result<Option<i64>, UpstreamError> {
    conn.simple_query("SAVEPOINT infraveil_count").await?;
    conn.simple_query("SET LOCAL statement_timeout = '500ms'")
        .await?;
    match conn
        .simple_query(&format!("SELECT count(*) FROM {quoted}"))
        .await
    {
        Ok(r) => {
            conn.simple_query("RELEASE SAVEPOINT infraveil_count")
                .await?;
            conn.simple_query("SET LOCAL statement_timeout = '3s'")
                .await?;
            Ok(r.first()
                .and_then(|row| row.first().cloned().flatten())
                .and_then(|v| v.parse().ok()))
        }
        Err(UpstreamError::Query(_)) => {
            // Undoes the shorter timeout too.
            conn.simple_query("ROLLBACK TO SAVEPOINT infraveil_count")
                .await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What `DROP` of the relation `regclass` would take with it: objects
/// outside it that depend on it (views, other tables' foreign keys,
/// functions), not its own constraints, indexes, triggers, rules or
/// policies, which go with it anyway. A view is named as the view, not as
/// its rewrite rule.
fn dependents_query(regclass: &str, limit: usize) -> String {
    format!(
        "WITH t AS (SELECT {regclass} AS oid), d AS ( \
           SELECT classid, objid, objsubid FROM pg_depend, t \
           WHERE refclassid = 'pg_class'::regclass AND refobjid = t.oid AND deptype = 'n') \
         SELECT DISTINCT CASE WHEN d.classid = 'pg_rewrite'::regclass \
             THEN (SELECT pg_describe_object('pg_class'::regclass, r.ev_class, 0) \
                   FROM pg_rewrite r WHERE r.oid = d.objid) \
             ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END AS what \
         FROM d, t WHERE NOT ( \
              (d.classid = 'pg_class'::regclass AND (d.objid = t.oid OR EXISTS \
                 (SELECT 1 FROM pg_index i WHERE i.indexrelid = d.objid AND i.indrelid = t.oid))) \
           OR (d.classid = 'pg_constraint'::regclass AND EXISTS \
                 (SELECT 1 FROM pg_constraint c WHERE c.oid = d.objid AND c.conrelid = t.oid)) \
           OR (d.classid = 'pg_rewrite'::regclass AND EXISTS \
                 (SELECT 1 FROM pg_rewrite r WHERE r.oid = d.objid AND r.ev_class = t.oid)) \
           OR (d.classid = 'pg_trigger'::regclass AND EXISTS \
                 (SELECT 1 FROM pg_trigger g WHERE g.oid = d.objid AND g.tgrelid = t.oid)) \
           OR (d.classid = 'pg_policy'::regclass AND EXISTS \
                 (SELECT 1 FROM pg_policy p WHERE p.oid = d.objid AND p.polrelid = t.oid)) \
           OR (d.classid = 'pg_attrdef'::regclass AND EXISTS \
                 (SELECT 1 FROM pg_attrdef a WHERE a.oid = d.objid AND a.adrelid = t.oid))) \
         ORDER BY 1 LIMIT {limit}"
    )
}

fn first_column(rows: Rows) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
}

fn listed(names: &[String]) -> String {
    let shown: Vec<&str> = names
        .iter()
        .take(MAX_DEPENDENTS)
        .map(String::as_str)
        .collect();
    let more = if names.len() > MAX_DEPENDENTS {
        ", …"
    } else {
        ""
    };
    format!("{}{more}", shown.join("; "))
}

/// A SQL string literal that reads the same whatever
/// `standard_conforming_strings` says (`E'…'`, backslashes doubled): the
/// upstream is refused when it is off, but a literal must not depend on it.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_how_sure_they_are() {
        assert_eq!(Count::Exact(1).describe(), "1 row (exact count)");
        assert_eq!(
            Count::Statistics(12).describe(),
            "about 12 rows (estimate from statistics)"
        );
        assert!(Count::Planner(1270).describe().contains("never analysed"));
    }

    #[test]
    fn quoting() {
        assert_eq!(literal("o'brien"), "E'o''brien'");
        assert_eq!(literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_relation("a\"b", "c"), "\"a\"\"b\".\"c\"");
    }
}
