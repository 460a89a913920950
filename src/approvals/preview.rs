//! Blast-radius preview: what a held statement would do, shown to the
//! approver before they decide. Computed on a separate upstream connection
//! as the role's own upstream user, inside a `READ ONLY` transaction with a
//! short statement timeout, and never with `EXPLAIN ANALYZE`: the preview can
//! read the catalog and ask the planner, nothing else.

use std::time::Duration;

use crate::proxy::upstream::{Rows, UpstreamConnector, UpstreamError};

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
    tables: &[String],
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

async fn compute(
    upstream: &UpstreamConnector,
    user: &str,
    database: &str,
    sql: &str,
    tables: &[String],
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
    let mut counts: Vec<(String, Count)> = Vec::new();
    for table in tables.iter().take(MAX_TABLES) {
        let Some((schema, name)) = table.split_once('.') else {
            continue;
        };
        let regclass = format!(
            "to_regclass(format('%I.%I', {}, {}))",
            literal(schema),
            literal(name)
        );
        let found = conn
            .simple_query(&format!(
                "SELECT c.reltuples::bigint, pg_size_pretty(pg_total_relation_size(c.oid)), \
                 c.relkind::text, pg_relation_size(c.oid) FROM pg_class c WHERE c.oid = {regclass}"
            ))
            .await?;
        let Some(row) = found.first() else {
            table_lines.push(format!(
                "{table}: does not exist (or is not visible to this role)"
            ));
            continue;
        };
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let size = field(1);
        let kind = field(2);
        let heap: i64 = field(3).parse().unwrap_or(i64::MAX);
        let reltuples: i64 = field(0).parse().unwrap_or(-1);
        let quoted = quote_ident_path(schema, name);
        let mut count = Count::Unknown;
        // Partitioned tables keep no heap of their own: count them too, the
        // timeout bounds it.
        if (kind == "r" || kind == "m" || kind == "p")
            && (heap <= EXACT_COUNT_MAX_BYTES || kind == "p")
            && let Some(n) = exact_count(&mut conn, &quoted).await?
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
            table_lines.push(format!("{table}: a view"));
        } else {
            table_lines.push(format!("{table}: {}, {size}", count.describe()));
        }
        counts.push((table.clone(), count));
        if dropping {
            let names = first_column(
                conn.simple_query(&dependents_query(&regclass, MAX_DEPENDENTS + 1))
                    .await?,
            );
            if !names.is_empty() {
                table_lines.push(format!(
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
                table_lines.push(format!(
                    "  referenced by: {} (TRUNCATE … CASCADE empties them too; without CASCADE the TRUNCATE fails)",
                    listed(&names)
                ));
            }
        }
    }

    let mut lines = Vec::new();
    let single = keywords.len() == 1;
    let first = keywords.first().map(String::as_str).unwrap_or("");
    if single && matches!(first, "DELETE" | "UPDATE" | "WITH" | "MERGE" | "INSERT") {
        // One statement, proven by the same lexer that split it: EXPLAIN
        // cannot be made to run a second one.
        let line = match conn
            .simple_query(&format!("EXPLAIN (FORMAT JSON, VERBOSE) {sql}"))
            .await
        {
            Ok(plan) => match (whole_table(&plan), planned_rows(&plan)) {
                // Every row of one table, counted: say so exactly.
                (Some(rel), _)
                    if let Some((t, Count::Exact(n))) = counts.iter().find(|(t, _)| *t == rel) =>
                {
                    format!("{first} would affect all {} of {t} (exact count)", rows(*n))
                }
                (_, Some(n)) => {
                    format!("{first} would affect about {} (planner estimate)", rows(n))
                }
                (_, None) => format!("{first}: the planner gave no row estimate"),
            },
            Err(UpstreamError::Query(m)) => format!("{first}: no estimate ({m})"),
            Err(e) => return Err(e),
        };
        lines.push(line);
    }
    lines.extend(table_lines);
    let _ = conn.simple_query("ROLLBACK").await;
    if lines.is_empty() {
        lines.push("no estimate for this kind of statement".to_owned());
    }
    Ok(lines)
}

/// `count(*)` of a table, as the role's user, if it takes under half a
/// second; `None` if it is refused or too slow (the caller estimates).
async fn exact_count(
    conn: &mut crate::proxy::upstream::Upstream,
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

/// The table a data-changing statement's plan reads whole: its input is a
/// plain sequential scan with no filter. Then it affects every row. Needs
/// `EXPLAIN (VERBOSE)`, which names the scan's schema.
fn whole_table(rows: &Rows) -> Option<String> {
    let text = rows.first()?.first()?.as_ref()?;
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let plan = json.get(0)?.get("Plan")?;
    if plan.get("Node Type")?.as_str()? != "ModifyTable" {
        return None;
    }
    let input = plan.get("Plans")?.as_array()?;
    let [scan] = input.as_slice() else {
        return None;
    };
    if scan.get("Node Type")?.as_str()? != "Seq Scan"
        || scan.get("Filter").is_some()
        || scan.get("Plans").is_some()
    {
        return None;
    }
    Some(format!(
        "{}.{}",
        scan.get("Schema")?.as_str()?,
        scan.get("Relation Name")?.as_str()?
    ))
}

/// The row estimate of an `EXPLAIN (FORMAT JSON)` result: for a data-changing
/// statement, the rows its input produces; otherwise the top plan's.
fn planned_rows(rows: &Rows) -> Option<i64> {
    let text = rows.first()?.first()?.as_ref()?;
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let plan = json.get(0)?.get("Plan")?;
    let node = if plan.get("Node Type")?.as_str()? == "ModifyTable" {
        plan.get("Plans")?.get(0)?
    } else {
        plan
    };
    node.get("Plan Rows")?.as_f64().map(|r| r.round() as i64)
}

/// A SQL string literal (standard_conforming_strings is on upstream).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident_path(schema: &str, name: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", q(schema), q(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_estimates_come_from_the_input_of_a_modify_node() {
        let rows = vec![vec![Some(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Plan Rows": 0,
                 "Plans": [{"Node Type": "Seq Scan", "Plan Rows": 1234}]}}]"#
                .to_owned(),
        )]];
        assert_eq!(planned_rows(&rows), Some(1234));
        let rows = vec![vec![Some(
            r#"[{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 7.0}}]"#.to_owned(),
        )]];
        assert_eq!(planned_rows(&rows), Some(7));
        assert_eq!(planned_rows(&vec![]), None);
    }

    #[test]
    fn a_plan_without_a_filter_reads_the_whole_table() {
        let plan = |input: &str| {
            vec![vec![Some(format!(
                r#"[{{"Plan": {{"Node Type": "ModifyTable", "Plans": [{input}]}}}}]"#
            ))]]
        };
        assert_eq!(
            whole_table(&plan(
                r#"{"Node Type": "Seq Scan", "Schema": "public", "Relation Name": "t"}"#
            )),
            Some("public.t".to_owned())
        );
        assert_eq!(
            whole_table(&plan(
                r#"{"Node Type": "Seq Scan", "Schema": "s", "Relation Name": "t", "Filter": "(id > 0)"}"#
            )),
            None
        );
        assert_eq!(
            whole_table(&plan(
                r#"{"Node Type": "Index Scan", "Relation Name": "t"}"#
            )),
            None
        );
    }

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
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(quote_ident_path("a\"b", "c"), "\"a\"\"b\".\"c\"");
    }
}
