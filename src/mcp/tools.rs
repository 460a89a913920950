//! The tools: their names, input schemas and descriptions (written for a
//! model choosing among them), and what each does. Statements run over the
//! firewall connection; `check`, `propose`, `status` and `whoami` ask the
//! firewall's self-service API. Every result is JSON.

use std::sync::Arc;

use futures_util::{StreamExt, pin_mut};
use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

use super::Server;
use super::failure::Failure;
use super::values::{TextParam, row};

/// Rows returned when the call does not say.
const DEFAULT_MAX_ROWS: u64 = 100;
/// The most rows one call returns, whatever it asks.
const MAX_ROWS: u64 = 10_000;

fn schema(v: Value) -> Arc<Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

/// The tool list.
pub fn list() -> Vec<Tool> {
    let mut tools = defined();
    for t in &mut tools {
        // Hints for runtimes that ask before calling tools that may change
        // things; the firewall decides either way.
        let changes = matches!(&*t.name, "query" | "propose");
        *t = t.clone().annotate(
            ToolAnnotations::new()
                .read_only(!changes)
                .destructive(t.name == "query")
                .open_world(false),
        );
    }
    tools
}

fn defined() -> Vec<Tool> {
    let sql = json!({"type": "string", "description": "One SQL statement (PostgreSQL dialect)."});
    vec![
        Tool::new(
            "query",
            "Run ONE SQL statement against the database through the Infraveil firewall, as your \
             own identity. Returns columns, rows (capped at max_rows, with `truncated`), the \
             command and rows affected. The firewall may refuse: a `denied` error names the rule \
             and reason (do not retry as is); a `held` error means a human must approve it first \
             (use `status` with its approval_id, then send the identical statement again, which \
             runs once). Use `check` first when unsure; use `propose` to ask for approval \
             without trying.",
            schema(json!({
                "type": "object",
                "properties": {
                    "sql": sql,
                    "params": {
                        "type": "array",
                        "description": "Values for $1, $2, ... in order; strings, numbers, booleans, null or JSON. Sent as text; PostgreSQL converts them.",
                        "items": {}
                    },
                    "max_rows": {
                        "type": "integer", "minimum": 0, "maximum": MAX_ROWS,
                        "description": "Most rows to return (default 100)."
                    }
                },
                "required": ["sql"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "check",
            "Ask the firewall how it would judge a statement for your identity, WITHOUT running \
             it: its class (read, write, ddl, destructive, privileged, unknown), the tables it \
             touches, the decision (allow, hold for approval, deny) and why.",
            schema(json!({
                "type": "object",
                "properties": {"sql": sql},
                "required": ["sql"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "propose",
            "Ask a human to approve a statement the policy holds (for example a DELETE), without \
             running it. Returns the approval request's id, who may approve it, a preview of \
             what it would affect (blast radius) and the approval link to show a human. Proposing \
             the same statement again returns the same pending request. After approval, run the \
             IDENTICAL statement with `query`: it runs once; later runs are held again.",
            schema(json!({
                "type": "object",
                "properties": {
                    "sql": sql,
                    "reason": {"type": "string", "description": "Why this statement is needed, for the approvers."}
                },
                "required": ["sql", "reason"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "status",
            "The state of one of your approval requests: pending, approved (run the identical \
             statement with `query` now), executed (it ran), denied, expired or cancelled, with \
             who decided and any note.",
            schema(json!({
                "type": "object",
                "properties": {"id": {"type": "string", "description": "The approval id, like a-0123456789ab."}},
                "required": ["id"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "describe",
            "Explore the schema. Without `table`: the tables and views you can see, and whether \
             you may read each. With `table` (`name` or `schema.name`): its columns (name, type, \
             nullable, default) and primary key.",
            schema(json!({
                "type": "object",
                "properties": {"table": {"type": "string", "description": "A table, `name` or `schema.name`."}},
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "whoami",
            "Who you are to the firewall: identity, kind, role, when your grant expires, and \
             what this identity may do (statement classes allowed, held or denied; table scope; \
             what PostgreSQL itself lets the role do).",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        ),
    ]
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a str, Failure> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            Failure::new(
                "bad_request",
                format!("`{name}` (a non-empty string) is required"),
            )
        })
}

impl Server {
    /// Run one tool; `ct` is cancelled when the client cancels the call.
    pub async fn dispatch(
        &self,
        name: &str,
        args: &Map<String, Value>,
        ct: CancellationToken,
    ) -> Result<Value, Failure> {
        match name {
            "query" => self.query(args, ct).await,
            "check" => self.api()?.check(str_arg(args, "sql")?).await,
            "propose" => {
                let reason = args.get("reason").and_then(Value::as_str).unwrap_or("");
                self.api()?.propose(str_arg(args, "sql")?, reason).await
            }
            "status" => status(self.api()?.status(str_arg(args, "id")?).await?),
            "describe" => match args.get("table").and_then(Value::as_str) {
                Some(t) if !t.trim().is_empty() => self.describe_table(t).await,
                _ => self.tables().await.map(|t| json!({ "tables": t })),
            },
            "whoami" => self.whoami().await,
            other => Err(Failure::new(
                "bad_request",
                format!("no tool named {other:?}"),
            )),
        }
    }

    fn api(&self) -> Result<&super::api::SelfApi, Failure> {
        self.api.as_ref().ok_or_else(|| {
            Failure::new(
                "needs_admin_url",
                "this tool needs the firewall's admin API, which was not configured",
            )
        })
    }

    async fn query(
        &self,
        args: &Map<String, Value>,
        ct: CancellationToken,
    ) -> Result<Value, Failure> {
        let sql = str_arg(args, "sql")?;
        let params: Vec<TextParam> = match args.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(TextParam::from_json).collect(),
            Some(_) => return Err(Failure::new("bad_request", "`params` must be an array")),
        };
        let max = args
            .get("max_rows")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_MAX_ROWS)
            .min(MAX_ROWS) as usize;
        let client = self.conn.client().await?;
        let run = async {
            let stmt = client.prepare(sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            let stream = client.query_raw(&stmt, refs).await?;
            pin_mut!(stream);
            let mut rows = Vec::new();
            let mut truncated = false;
            while let Some(r) = stream.next().await {
                let r = r?;
                if rows.len() >= max {
                    truncated = true;
                    break;
                }
                rows.push(Value::Array(row(&r)));
            }
            let affected = if truncated {
                None
            } else {
                stream.rows_affected()
            };
            Ok::<_, tokio_postgres::Error>((stmt, rows, truncated, affected))
        };
        tokio::pin!(run);
        let outcome = tokio::select! {
            r = &mut run => r,
            _ = ct.cancelled() => {
                self.conn.cancel(&client).await;
                // Let the cancelled statement finish, so the connection is
                // free for the next call.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut run).await;
                return Err(Failure::new("cancelled", "the client cancelled the call; the statement was cancelled"));
            }
        };
        let (stmt, rows, truncated, affected) =
            outcome.map_err(|e| Failure::statement(&e, self.conn.ended().as_ref()))?;
        let columns: Vec<Value> = stmt
            .columns()
            .iter()
            .map(|c| json!({ "name": c.name(), "type": c.type_().name() }))
            .collect();
        let command = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        Ok(json!({
            "command": command,
            "columns": columns,
            "rows": rows,
            "row_count": rows.len(),
            "truncated": truncated,
            "rows_affected": affected,
        }))
    }

    /// Run a catalog read and return its rows as objects by column name.
    async fn catalog(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Value>, Failure> {
        let client = self.conn.client().await?;
        let rows = client
            .query(sql, params)
            .await
            .map_err(|e| Failure::statement(&e, self.conn.ended().as_ref()))?;
        Ok(rows
            .iter()
            .map(|r| {
                let vals = row(r);
                let obj: Map<String, Value> = r
                    .columns()
                    .iter()
                    .map(|c| c.name().to_owned())
                    .zip(vals)
                    .collect();
                Value::Object(obj)
            })
            .collect())
    }

    /// Tables and views this login can see, and whether it may read each.
    pub async fn tables(&self) -> Result<Vec<Value>, Failure> {
        self.catalog(
            "SELECT table_schema AS schema, table_name AS name, table_type AS type, \
             has_table_privilege(quote_ident(table_schema) || '.' || quote_ident(table_name), 'SELECT') AS readable \
             FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY 1, 2",
            &[],
        )
        .await
    }

    pub async fn describe_table(&self, table: &str) -> Result<Value, Failure> {
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s.trim().to_owned()), n.trim().to_owned()),
            None => (None, table.trim().to_owned()),
        };
        let columns = self
            .catalog(
                "SELECT table_schema AS schema, column_name AS name, data_type AS type, \
                 is_nullable = 'YES' AS nullable, column_default AS default \
                 FROM information_schema.columns \
                 WHERE table_name = $1 AND ($2::text IS NULL OR table_schema = $2::text) \
                 AND table_schema NOT IN ('pg_catalog', 'information_schema') \
                 ORDER BY table_schema, ordinal_position",
                &[&name, &schema],
            )
            .await?;
        if columns.is_empty() {
            return Err(Failure::new(
                "not_found",
                format!(
                    "no table {table:?} that you can see; call `describe` without a table for the list"
                ),
            ));
        }
        let key = self
            .catalog(
                "SELECT k.column_name AS name FROM information_schema.table_constraints c \
                 JOIN information_schema.key_column_usage k \
                 ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema \
                 AND k.table_name = c.table_name \
                 WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_name = $1 \
                 AND ($2::text IS NULL OR c.table_schema = $2::text) \
                 ORDER BY k.ordinal_position",
                &[&name, &schema],
            )
            .await?;
        let schema = columns[0]["schema"].clone();
        Ok(json!({
            "table": format!("{}.{}", schema.as_str().unwrap_or(""), name),
            "columns": columns,
            "primary_key": key.iter().map(|k| k["name"].clone()).collect::<Vec<_>>(),
        }))
    }

    async fn whoami(&self) -> Result<Value, Failure> {
        let t = self.conn.target();
        match &self.api {
            Some(api) => api.whoami().await,
            None => Ok(json!({
                "identity": t.identity,
                "database": t.database,
                "note": "the firewall's admin API was not configured (--admin-url), so role, grant and scope are unknown here",
            })),
        }
    }
}

/// A request's state, with what to do next.
fn status(mut v: Value) -> Result<Value, Failure> {
    let next = match v["status"].as_str().unwrap_or("") {
        "pending" => "wait for a human; call `status` again later",
        "approved" => "run the identical statement with `query` now: it runs once",
        "executed" => "it has run; running it again needs a new approval",
        "denied" => "an approver refused it; do not run it",
        "expired" => "nobody decided in time; propose again if still needed",
        _ => "the request is over; propose again if still needed",
    };
    v["next"] = json!(next);
    Ok(v)
}
