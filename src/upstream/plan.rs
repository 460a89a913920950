//! What PostgreSQL's planner says a statement will do, read from
//! `EXPLAIN (FORMAT JSON, VERBOSE)`: the tables it changes and how many
//! rows it expects to change in each. For approval previews and row-estimate
//! holds; never `EXPLAIN ANALYZE`, which runs the statement.

use super::Rows;

/// `"schema"."name"`, each part quoted whatever it holds (a schema may
/// hold a dot), for the firewall's own catalog queries.
pub fn quote_relation(schema: &str, name: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", q(schema), q(name))
}

/// One table a statement's plan changes (a `ModifyTable` node, in the
/// main query or in a data-changing `WITH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `Delete`, `Update`, `Insert` or `Merge`.
    pub operation: String,
    pub schema: String,
    pub relation: String,
    /// The planner's rows for its input.
    pub rows: Option<i64>,
    /// Its input is a plain sequential scan of that table with no filter:
    /// every row.
    pub whole: bool,
    /// An INSERT … ON CONFLICT DO UPDATE: its input rows may each update
    /// an existing row.
    pub upsert: bool,
}

impl Change {
    /// It changes rows that exist: a DELETE, UPDATE, MERGE or upsert.
    pub fn changes_existing(&self) -> bool {
        matches!(self.operation.as_str(), "Delete" | "Update" | "Merge") || self.upsert
    }
}

/// Every table the plan changes, from `EXPLAIN (FORMAT JSON, VERBOSE)`
/// (which names each scan's schema).
pub fn modifications(rows: &Rows) -> Vec<Change> {
    let Some(text) = rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_ref())
    else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    // A statement a rule rewrites into several has a plan for each.
    let mut out = Vec::new();
    for plan in json.as_array().into_iter().flatten() {
        if let Some(plan) = plan.get("Plan") {
            walk_plan(plan, &mut out);
        }
    }
    out
}

fn walk_plan(node: &serde_json::Value, out: &mut Vec<Change>) {
    let children = node
        .get("Plans")
        .and_then(|p| p.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    if node.get("Node Type").and_then(|t| t.as_str()) == Some("ModifyTable") {
        let text = |k: &str| {
            node.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        // Its input is the child PostgreSQL calls Outer; InitPlans and
        // SubPlans beside it are subqueries, not the rows it changes.
        let input = children
            .iter()
            .find(|c| c.get("Parent Relationship").and_then(|r| r.as_str()) == Some("Outer"));
        let (schema, relation) = (text("Schema"), text("Relation Name"));
        let whole = input.is_some_and(|i| {
            i.get("Node Type").and_then(|t| t.as_str()) == Some("Seq Scan")
                && i.get("Filter").is_none()
                && i.get("Plans").is_none()
                && i.get("Schema").and_then(|s| s.as_str()) == Some(schema.as_str())
                && i.get("Relation Name").and_then(|s| s.as_str()) == Some(relation.as_str())
        });
        out.push(Change {
            operation: text("Operation"),
            schema,
            relation,
            rows: input
                .and_then(|i| i.get("Plan Rows"))
                .and_then(|r| r.as_f64())
                .map(|r| r.round() as i64),
            whole,
            upsert: node.get("Conflict Resolution").and_then(|v| v.as_str()) == Some("UPDATE"),
        });
    }
    for c in children {
        walk_plan(c, out);
    }
}

/// The top plan's row estimate of an `EXPLAIN (FORMAT JSON)` result (for
/// `SELECT 1 FROM t`: the planner's idea of the table's rows).
pub fn planned_rows(rows: &Rows) -> Option<i64> {
    let text = rows.first()?.first()?.as_ref()?;
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let plan = json.get(0)?.get("Plan")?;
    plan.get("Plan Rows")?.as_f64().map(|r| r.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Rows {
        vec![vec![Some(json.to_owned())]]
    }

    #[test]
    fn changes_come_from_every_modify_node_and_its_outer_input() {
        // A subquery beside the input (an InitPlan) is not what it changes.
        let update = plan(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Update", "Schema": "public",
                 "Relation Name": "t", "Plans": [
                   {"Node Type": "Result", "Parent Relationship": "InitPlan", "Plan Rows": 1},
                   {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Schema": "public",
                    "Relation Name": "t", "Filter": "(id > 0)", "Plan Rows": 100}]}}]"#,
        );
        assert_eq!(
            modifications(&update),
            vec![Change {
                operation: "Update".into(),
                schema: "public".into(),
                relation: "t".into(),
                rows: Some(100),
                whole: false,
                upsert: false,
            }]
        );
        // A data-changing WITH under a SELECT: found below the top node.
        let cte = plan(
            r#"[{"Plan": {"Node Type": "Result", "Plan Rows": 1, "Plans": [
                 {"Node Type": "ModifyTable", "Operation": "Delete", "Parent Relationship": "InitPlan",
                  "Schema": "public", "Relation Name": "t", "Plans": [
                    {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Schema": "public",
                     "Relation Name": "t", "Plan Rows": 100}]}]}}]"#,
        );
        let m = modifications(&cte);
        assert_eq!(m.len(), 1);
        assert!(m[0].whole && m[0].rows == Some(100), "{m:?}");
        // Whole only for a plain scan of that same table.
        let other = plan(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete", "Schema": "a.b",
                 "Relation Name": "c", "Plans": [
                   {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Schema": "a",
                    "Relation Name": "b.c", "Plan Rows": 2}]}}]"#,
        );
        assert!(!modifications(&other)[0].whole);
        assert_eq!(
            planned_rows(&plan(
                r#"[{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 7.0}}]"#
            )),
            Some(7)
        );
        assert_eq!(planned_rows(&vec![]), None);
    }
}
