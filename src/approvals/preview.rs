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
    let mut lines = Vec::new();

    let keywords = crate::classify::leading_keywords(sql).unwrap_or_default();
    let single = keywords.len() == 1;
    let first = keywords.first().map(String::as_str).unwrap_or("");
    if single && matches!(first, "DELETE" | "UPDATE" | "WITH" | "MERGE" | "INSERT") {
        // One statement, proven by the same lexer that split it: EXPLAIN
        // cannot be made to run a second one.
        let line = match conn
            .simple_query(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .await
        {
            Ok(rows) => match planned_rows(&rows) {
                Some(n) => format!("{first} would affect about {n} rows (planner estimate)"),
                None => format!("{first}: the planner gave no row estimate"),
            },
            Err(UpstreamError::Query(m)) => format!("{first}: no estimate ({m})"),
            Err(e) => return Err(e),
        };
        lines.push(line);
    }
    let cascade = keywords.iter().any(|k| k == "DROP" || k == "TRUNCATE");
    for table in tables.iter().take(MAX_TABLES) {
        let Some((schema, name)) = table.split_once('.') else {
            continue;
        };
        let regclass = format!(
            "to_regclass(format('%I.%I', {}, {}))",
            literal(schema),
            literal(name)
        );
        let rows = conn
            .simple_query(&format!(
                "SELECT c.reltuples::bigint, pg_size_pretty(pg_total_relation_size(c.oid)), \
                 c.relkind::text FROM pg_class c WHERE c.oid = {regclass}"
            ))
            .await?;
        let Some(row) = rows.first() else {
            lines.push(format!(
                "{table}: does not exist (or is not visible to this role)"
            ));
            continue;
        };
        let size = row.get(1).cloned().flatten().unwrap_or_default();
        let mut estimate: i64 = row
            .first()
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        if estimate < 0 {
            // Never analyzed: ask the planner, which estimates from pages.
            let q = format!(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM {}",
                quote_ident_path(schema, name)
            );
            if let Ok(rows) = conn.simple_query(&q).await {
                estimate = planned_rows(&rows).unwrap_or(-1);
            }
        }
        let rows_text = if estimate >= 0 {
            format!("about {estimate} rows")
        } else {
            "row count unknown".to_owned()
        };
        lines.push(format!("{table}: {rows_text}, {size}"));
        if cascade {
            let deps = conn
                .simple_query(&format!(
                    "SELECT DISTINCT pg_describe_object(classid, objid, objsubid) FROM pg_depend \
                     WHERE refclassid = 'pg_class'::regclass AND refobjid = {regclass} \
                     AND deptype = 'n' ORDER BY 1 LIMIT {}",
                    MAX_DEPENDENTS + 1
                ))
                .await?;
            let names: Vec<String> = deps
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            if !names.is_empty() {
                let more = if names.len() > MAX_DEPENDENTS {
                    ", …"
                } else {
                    ""
                };
                let shown: Vec<&str> = names
                    .iter()
                    .take(MAX_DEPENDENTS)
                    .map(String::as_str)
                    .collect();
                lines.push(format!(
                    "  CASCADE would also take: {}{more}",
                    shown.join("; ")
                ));
            }
        }
    }
    let _ = conn.simple_query("ROLLBACK").await;
    if lines.is_empty() {
        lines.push("no estimate for this kind of statement".to_owned());
    }
    Ok(lines)
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
    fn quoting() {
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(quote_ident_path("a\"b", "c"), "\"a\"\"b\".\"c\"");
    }
}
