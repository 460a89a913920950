//! Row estimates for roles with row limits (the rule is
//! [`crate::policy::limits`]'s): before such a role's write runs, each of
//! its DELETE / UPDATE / MERGE statements is planned on a side connection,
//! as the role's upstream user, with `EXPLAIN` and never `ANALYZE`, in a
//! read-only transaction with a statement and lock timeout, parameters
//! bound as the client's `Bind` gave them. Over a limit, or when no
//! estimate can be made, the statement counts as `destructive`.
//!
//! Side connections are kept idle per database and user, and the plans
//! and the tables' figures are asked for in one round trip, so a limited
//! write pays about one round trip and the planning, not a login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::policy::limits::RowCheck;
use crate::upstream::plan::{Change, modifications, planned_rows, quote_relation};
use crate::upstream::{Param, Rows, Upstream, UpstreamConnector, UpstreamError};

/// Longest a whole estimate may take before it counts as over.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle side connections kept per (database, user), pairs kept, and for
/// how long: an idle one still holds a connection slot and keeps its
/// database from being dropped.
const IDLE_PER_KEY: usize = 4;
const MAX_KEYS: usize = 64;
const IDLE_FOR: Duration = Duration::from_secs(10);
/// Every statement on a side connection is read-only and bounded: a plan
/// that waits on another session's lock gives up rather than queue.
/// Names resolve on the default path, as sessions' do (logins refuse any
/// other), even if a role default changes later.
const SETUP: &str = "SET default_transaction_read_only = on; \
     SET statement_timeout = '2s'; SET lock_timeout = '1s'; \
     SET search_path = \"$user\", public";

/// What the planner said of a limited write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sized {
    /// Within the role's limits; what the planner expects, for the log.
    Within(String),
    /// Over a limit, or not sized at all: why, for the client and the
    /// approvers.
    Over(String),
}

/// The settings PostgreSQL reports to a session (`ParameterStatus`) that
/// change how it reads dates, times and intervals in a statement or a
/// parameter: the side connection takes the session's values, so both read
/// `'01/12/2026'` as the same day.
pub const READING: [&str; 3] = ["DateStyle", "IntervalStyle", "TimeZone"];

/// A session's values of [`READING`], as PostgreSQL last reported them.
#[derive(Debug, Default)]
pub struct Settings(Mutex<[Option<String>; 3]>);

impl Settings {
    /// Note a `ParameterStatus` frame (other settings are ignored).
    pub fn observe(&self, frame: &crate::protocol::Frame) {
        if frame.tag() != b'S' {
            return;
        }
        let mut parts = frame.body().split(|&b| b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        if let Some(i) = READING.iter().position(|r| r.as_bytes() == name) {
            let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
            v[i] = Some(String::from_utf8_lossy(value).into_owned());
        }
    }

    /// The values known, in [`READING`]'s order (empty: the defaults).
    pub fn snapshot(&self) -> Vec<(&'static str, String)> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        READING
            .iter()
            .zip(v.iter())
            .filter_map(|(n, v)| v.clone().map(|v| (*n, v)))
            .collect()
    }
}

/// (database, upstream user, the session's reading settings).
type Key = (String, String, Vec<(&'static str, String)>);

/// The side connections, by (database, upstream user).
#[derive(Default)]
pub struct Planner {
    idle: Mutex<HashMap<Key, Vec<(Instant, Upstream)>>>,
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
        settings: Vec<(&'static str, String)>,
    ) -> Sized {
        let limits = check.limits();
        if let Some(why) = &check.unplannable {
            return Sized::Over(format!(
                "{why}; with {limits} a write that cannot be sized counts as destructive"
            ));
        }
        let key = (database.to_owned(), check.upstream_user.clone(), settings);
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
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some((at, conn)) = list.pop() {
            if at.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    /// Close side connections idle for longer than [`IDLE_FOR`] (the
    /// sweeper calls this).
    pub fn close_idle(&self) {
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain(|(at, _)| at.elapsed() < IDLE_FOR);
            !list.is_empty()
        });
    }

    /// Side connections open and idle now.
    pub fn idle(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn put(&self, key: &Key, conn: Upstream) {
        let mut idle = self.lock();
        if idle.len() >= MAX_KEYS && !idle.contains_key(key) {
            idle.clear();
        }
        let list = idle.entry(key.clone()).or_default();
        if list.len() < IDLE_PER_KEY {
            list.push((Instant::now(), conn));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<(Instant, Upstream)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn connect(
    upstream: &UpstreamConnector,
    (database, user, settings): &Key,
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
    for (name, value) in settings {
        conn.extended_query(
            "SELECT pg_catalog.set_config($1, $2, false)",
            &[],
            &[text_param(name), text_param(value)],
        )
        .await?;
    }
    Ok(conn)
}

/// One changed table as the catalog describes it.
struct Table {
    name: String,
    rows: Option<i64>,
    size: String,
}

/// Rows (statistics; -1 for a table never analysed) and size of the
/// tables named by two parallel arrays of schemas and names.
const TABLES: &str = "SELECT n.nspname, c.relname, c.reltuples::bigint, \
     pg_size_pretty(pg_total_relation_size(c.oid)) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN unnest($1::text[], $2::text[]) AS t(s, r) ON n.nspname = t.s AND c.relname = t.r";

/// The plans and the catalog facts of the tables the statements name,
/// in one round trip; a table the plan changes that the statements do not
/// name (a rule's, an inheritance child's) costs one more.
async fn size_with(
    conn: &mut Upstream,
    check: &RowCheck,
    (types, params): (&[u32], &[Param]),
) -> Result<Sized, UpstreamError> {
    let explains: Vec<String> = check
        .statements
        .iter()
        .map(|s| format!("EXPLAIN (FORMAT JSON, VERBOSE) {s}"))
        .collect();
    let relations = check.relations();
    let tables_params = [
        text_param(&array(relations.iter().map(|t| t.schema.as_str()))),
        text_param(&array(relations.iter().map(|t| t.name.as_str()))),
    ];
    let mut queries: Vec<(&str, &[u32], &[Param])> = explains
        .iter()
        .map(|e| (e.as_str(), types, params))
        .collect();
    queries.push((TABLES, &[], &tables_params));
    let mut answers = conn.pipeline(&queries).await?;
    let facts = match answers.pop() {
        Some(Ok(rows)) => rows,
        Some(Err(m)) => return Err(UpstreamError::Query(m)),
        None => Vec::new(),
    };
    let mut changes: Vec<Change> = Vec::new();
    for plan in answers {
        let plan = plan.map_err(UpstreamError::Query)?;
        let found = modifications(&plan);
        if found.is_empty() {
            return Ok(Sized::Over(format!(
                "the planner shows no table this statement changes, so its size is unknown; with {} it counts as destructive",
                check.limits()
            )));
        }
        changes.extend(found.into_iter().filter(Change::changes_existing));
    }
    let mut total: i64 = 0;
    let mut parts = Vec::new();
    let mut over = Vec::new();
    // Rows per table, for the fraction: two CTEs of 8% each change 16%.
    let mut per_table: Vec<(Table, i64)> = Vec::new();
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
        let table = describe(conn, c, rows, &facts).await?;
        let of = match table.rows {
            Some(n) => format!("of about {n} rows, {}", table.size),
            None => format!("row count unknown, {}", table.size),
        };
        let verb = if c.upsert {
            "INSERT … ON CONFLICT DO UPDATE".to_owned()
        } else {
            c.operation.to_uppercase()
        };
        parts.push(format!("{verb} about {rows} rows of {} ({of})", table.name));
        match per_table.iter_mut().find(|(t, _)| t.name == table.name) {
            Some((_, n)) => *n = n.saturating_add(rows),
            None => per_table.push((table, rows)),
        }
    }
    if let Some(f) = check.max_rows_fraction {
        for (table, rows) in &per_table {
            match table.rows.map(|n| *rows as f64 / (n.max(1) as f64)) {
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
/// table never analysed, or one whose own figure is below the rows planned
/// for it: an inheritance parent counts its children too) and size, as the
/// role's user sees them: from `facts` when the statements named it, else
/// read now.
async fn describe(
    conn: &mut Upstream,
    c: &Change,
    planned: i64,
    facts: &Rows,
) -> Result<Table, UpstreamError> {
    let field =
        |row: &[Option<String>], i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let known = facts
        .iter()
        .find(|r| field(r, 0) == c.schema && field(r, 1) == c.relation)
        .map(|r| (field(r, 2), field(r, 3)));
    let (reltuples, size) = match known {
        Some(k) => k,
        None => {
            let one = |s: &str| text_param(&array([s]));
            let rows = conn
                .extended_query(TABLES, &[], &[one(&c.schema), one(&c.relation)])
                .await?;
            match rows.first() {
                Some(r) => (field(r, 2), field(r, 3)),
                None => (String::new(), "size unknown".to_owned()),
            }
        }
    };
    let mut count = reltuples
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0 && *n >= planned);
    if count.is_none() && !reltuples.is_empty() {
        let q = format!(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM {}",
            quote_relation(&c.schema, &c.relation)
        );
        count = planned_rows(&conn.extended_query(&q, &[], &[]).await?);
    }
    Ok(Table {
        name: format!("{}.{}", c.schema, c.relation),
        rows: count,
        size,
    })
}

fn text_param(s: &str) -> Param {
    (false, Some(bytes::Bytes::copy_from_slice(s.as_bytes())))
}

/// A `text[]` literal: every element double-quoted, `"` and `\` escaped.
fn array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_every_element() {
        assert_eq!(
            array(["public", "a\"b", "c\\d", "e,f"]),
            r#"{"public","a\"b","c\\d","e,f"}"#
        );
        assert_eq!(array([]), "{}");
    }
}
