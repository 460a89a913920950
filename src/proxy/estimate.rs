//! Row estimates for roles with row limits (the rule is
//! [`crate::policy::limits`]'s): before such a role's write runs, each of
//! its DELETE / UPDATE / MERGE statements is planned on a side connection,
//! as the role's upstream user, with `EXPLAIN` and never `ANALYZE`, in a
//! read-only transaction with a statement and lock timeout, parameters
//! bound as the client's `Bind` gave them. Over a limit, or when no
//! estimate can be made, the statement counts as `destructive`.
//!
//! Side connections are kept idle per database and user, so a limited
//! write pays a round trip or two rather than a login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing::debug;

use crate::policy::limits::RowCheck;
use crate::upstream::plan::{Change, modifications, planned_rows};
use crate::upstream::{Param, Upstream, UpstreamConnector, UpstreamError};

/// Longest a whole estimate may take before it counts as over.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle side connections kept per (database, user), and pairs kept.
const IDLE_PER_KEY: usize = 4;
const MAX_KEYS: usize = 64;
/// Every statement on a side connection is read-only and bounded: a plan
/// that waits on another session's lock gives up rather than queue.
const SETUP: &str = "SET default_transaction_read_only = on; \
     SET statement_timeout = '2s'; SET lock_timeout = '1s'";

/// What the planner said of a limited write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sized {
    /// Within the role's limits; what the planner expects, for the log.
    Within(String),
    /// Over a limit, or not sized at all: why, for the client and the
    /// approvers.
    Over(String),
}

type Key = (String, String);

/// The side connections, by (database, upstream user).
#[derive(Default)]
pub struct Planner {
    idle: Mutex<HashMap<Key, Vec<Upstream>>>,
}

impl Planner {
    /// Size the statements of `check`, in `database`, with the values a
    /// `Bind` carried (`types` and `params` are empty for a simple query).
    pub async fn size(
        &self,
        upstream: &UpstreamConnector,
        database: &str,
        check: &RowCheck,
        (types, params): (&[u32], &[Param]),
    ) -> Sized {
        let limits = check.limits();
        if let Some(why) = &check.unplannable {
            return Sized::Over(format!(
                "{why}; with {limits} a write that cannot be sized counts as destructive"
            ));
        }
        let key = (database.to_owned(), check.upstream_user.clone());
        let run = self.size_on_side(upstream, &key, check, (types, params));
        match tokio::time::timeout(CHECK_TIMEOUT, run).await {
            Ok(Ok(sized)) => sized,
            Ok(Err(e)) => Sized::Over(format!(
                "no row estimate could be made ({e}); with {limits} a write that cannot be sized counts as destructive"
            )),
            Err(_) => Sized::Over(format!(
                "no row estimate could be made in {}s; with {limits} a write that cannot be sized counts as destructive",
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }

    /// On an idle side connection (once more on a new one, if the idle one
    /// had gone away); the connection is kept if it is still usable.
    async fn size_on_side(
        &self,
        upstream: &UpstreamConnector,
        key: &Key,
        check: &RowCheck,
        bound: (&[u32], &[Param]),
    ) -> Result<Sized, UpstreamError> {
        let mut retried = false;
        loop {
            let (mut conn, pooled) = match self.take(key) {
                Some(c) => (c, true),
                None => (connect(upstream, key).await?, false),
            };
            match size_with(&mut conn, check, bound).await {
                Ok(sized) => {
                    self.put(key, conn);
                    return Ok(sized);
                }
                // PostgreSQL answered: the connection is fine.
                Err(UpstreamError::Query(m)) => {
                    self.put(key, conn);
                    return Err(UpstreamError::Query(m));
                }
                Err(_) if pooled && !retried => retried = true,
                Err(e) => return Err(e),
            }
        }
    }

    fn take(&self, key: &Key) -> Option<Upstream> {
        self.lock().get_mut(key).and_then(Vec::pop)
    }

    fn put(&self, key: &Key, conn: Upstream) {
        let mut idle = self.lock();
        if idle.len() >= MAX_KEYS && !idle.contains_key(key) {
            idle.clear();
        }
        let list = idle.entry(key.clone()).or_default();
        if list.len() < IDLE_PER_KEY {
            list.push(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Upstream>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn connect(
    upstream: &UpstreamConnector,
    (database, user): &Key,
) -> Result<Upstream, UpstreamError> {
    let params = [
        ("database".to_owned(), database.clone()),
        (
            "application_name".to_owned(),
            "infraveil-estimate".to_owned(),
        ),
    ];
    let mut conn = upstream.connect(user, &params).await?;
    conn.simple_query(SETUP).await?;
    Ok(conn)
}

/// One changed table as the catalog describes it.
struct Table {
    name: String,
    rows: Option<i64>,
    size: String,
}

async fn size_with(
    conn: &mut Upstream,
    check: &RowCheck,
    (types, params): (&[u32], &[Param]),
) -> Result<Sized, UpstreamError> {
    let mut changes: Vec<Change> = Vec::new();
    for statement in &check.statements {
        let plan = conn
            .extended_query(
                &format!("EXPLAIN (FORMAT JSON, VERBOSE) {statement}"),
                types,
                params,
            )
            .await?;
        let found = modifications(&plan);
        if found.is_empty() {
            return Ok(Sized::Over(format!(
                "the planner shows no table this statement changes, so its size is unknown; with {} it counts as destructive",
                check.limits()
            )));
        }
        changes.extend(
            found
                .into_iter()
                .filter(|c| matches!(c.operation.as_str(), "Delete" | "Update" | "Merge")),
        );
    }
    let mut total: i64 = 0;
    let mut parts = Vec::new();
    let mut over = Vec::new();
    for c in &changes {
        let Some(rows) = c.rows else {
            return Ok(Sized::Over(format!(
                "the planner gave no row estimate for the {} of {}.{}; with {} it counts as destructive",
                c.operation.to_uppercase(),
                c.schema,
                c.relation,
                check.limits()
            )));
        };
        total = total.saturating_add(rows);
        let table = describe(conn, c).await?;
        let of = match table.rows {
            Some(n) => format!("of about {n} rows, {}", table.size),
            None => format!("row count unknown, {}", table.size),
        };
        parts.push(format!(
            "{} about {rows} rows of {} ({of})",
            c.operation.to_uppercase(),
            table.name
        ));
        if let Some(f) = check.max_rows_fraction {
            let share = table.rows.map(|n| rows as f64 / (n.max(1) as f64));
            match share {
                Some(s) if s > f => over.push(format!(
                    "{:.0}% of {} is over max_rows_fraction {f}",
                    s * 100.0,
                    table.name
                )),
                Some(_) => {}
                None => over.push(format!(
                    "the size of {} is unknown, so max_rows_fraction {f} cannot be checked",
                    table.name
                )),
            }
        }
    }
    if let Some(max) = check.max_rows
        && total > i64::try_from(max).unwrap_or(i64::MAX)
    {
        over.insert(0, format!("{total} rows is over max_rows {max}"));
    }
    let expected = if parts.is_empty() {
        "the planner expects it to change no existing rows".to_owned()
    } else {
        format!("the planner expects {}", parts.join("; "))
    };
    debug!(%expected, over = !over.is_empty(), "row estimate");
    if over.is_empty() {
        Ok(Sized::Within(expected))
    } else {
        Ok(Sized::Over(format!(
            "{expected}: {}, so it counts as destructive",
            over.join(" and ")
        )))
    }
}

/// The changed table's rows (statistics, else the planner's guess for a
/// table never analysed) and size, as the role's user sees them.
async fn describe(conn: &mut Upstream, c: &Change) -> Result<Table, UpstreamError> {
    let text = |s: &str| (false, Some(bytes::Bytes::copy_from_slice(s.as_bytes())));
    let rows = conn
        .extended_query(
            "SELECT c.reltuples::bigint, pg_size_pretty(pg_total_relation_size(c.oid)) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[],
            &[text(&c.schema), text(&c.relation)],
        )
        .await?;
    let name = format!("{}.{}", c.schema, c.relation);
    let Some(row) = rows.first() else {
        return Ok(Table {
            name,
            rows: None,
            size: "size unknown".to_owned(),
        });
    };
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let size = field(1);
    let mut count = field(0).parse::<i64>().ok().filter(|n| *n >= 0);
    if count.is_none() {
        let q = format!(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM {}",
            quote_path(&c.schema, &c.relation)
        );
        count = planned_rows(&conn.extended_query(&q, &[], &[]).await?);
    }
    Ok(Table {
        name,
        rows: count,
        size,
    })
}

fn quote_path(schema: &str, name: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", q(schema), q(name))
}
