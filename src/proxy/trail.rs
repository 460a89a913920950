//! A session's statements in the audit log: [`Trail`] numbers each
//! statement, records it with its decision and makes the record durable
//! before a data-changing statement is forwarded; [`Tracker`] pairs what
//! PostgreSQL answered (command tags, rows, SQLSTATE, duration) with the
//! statement it answered.
//!
//! The frontend notes every `Query`, `Execute` and `Sync` it forwards, in
//! order; the backend feeds each response frame. Responses come back in the
//! order requests went out, so a queue pairs them: a `Query` ends at its
//! `ReadyForQuery`, an `Execute` at its `CommandComplete` / error /
//! `EmptyQueryResponse` / `PortalSuspended`, and Executes PostgreSQL skipped
//! after an error (up to the `Sync`) end as `skipped` at the `ReadyForQuery`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use crate::audit::{Audit, AuditError, Event};
use crate::classify::Class;
use crate::inspect::SessionInfo;
use crate::protocol::{ErrorFields, Frame};

/// Longest statement text kept in a record; longer text is cut and its
/// SHA-256 kept instead of the rest.
const MAX_TEXT: usize = 64 * 1024;

/// What the audit log says about one decision (moved into the record).
pub struct Decided {
    pub class: Option<Class>,
    pub decision: &'static str,
    pub rule: Option<String>,
    pub tables: Vec<String>,
}

/// The frontend's side: statement numbers, which prepared statement and
/// portal came from which statement, and records not yet handed to the log.
pub struct Trail {
    session: u64,
    identity: String,
    role: String,
    grant: String,
    next: u64,
    names: HashMap<String, u64>,
    portals: HashMap<String, u64>,
    /// Statements that change something and may run: each `Execute` of
    /// one is recorded, durably, before it is forwarded.
    changing: HashSet<u64>,
    events: Vec<Event>,
    /// A pending record belongs to a statement that changes something: the
    /// batch waits for durability before it is forwarded.
    durable: bool,
    /// A pending record belongs to a statement that goes upstream.
    forwards: bool,
}

impl Trail {
    pub fn new(info: &SessionInfo) -> Trail {
        Trail {
            session: info.id,
            identity: info.identity.clone(),
            role: info.role.clone(),
            grant: info.credential_id.clone(),
            next: 0,
            names: HashMap::new(),
            portals: HashMap::new(),
            changing: HashSet::new(),
            events: Vec::new(),
            durable: false,
            forwards: false,
        }
    }

    /// Record a statement and its decision; returns its number.
    pub fn statement(&mut self, via: &'static str, sql: &str, d: Decided) -> u64 {
        self.next += 1;
        let redacted = crate::classify::redact(sql);
        let text = if redacted.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !redacted.is_char_boundary(end) {
                end -= 1;
            }
            format!(
                "{}… [{} bytes, sha256 {}]",
                &redacted[..end],
                redacted.len(),
                crate::approvals::statement_hash(&redacted)
            )
        } else {
            redacted.into_owned()
        };
        // Reads may wait for the read window; anything else that goes
        // upstream is durable first. Unclassified counts as unknown.
        let changes = d.class.is_none_or(|c| c != Class::Read);
        self.durable |= changes && d.decision == "allow";
        if changes && d.decision != "deny" {
            self.changing.insert(self.next);
        }
        self.forwards |= d.decision == "allow";
        self.events.push(Event::Statement {
            session: self.session,
            statement: self.next,
            identity: self.identity.clone(),
            role: self.role.clone(),
            grant: self.grant.clone(),
            via,
            text,
            class: d.class.map(|c| c.to_string()),
            tables: d.tables,
            decision: d.decision,
            rule: d.rule,
            approval: None,
        });
        self.next
    }

    /// A `Parse` of statement `n` under `name` went upstream.
    pub fn parsed(&mut self, name: &str, n: u64) {
        self.names.insert(name.to_owned(), n);
    }

    /// A `Bind` made `portal` from prepared statement `name`.
    pub fn bound(&mut self, portal: &str, name: &str) {
        let n = self.names.get(name).copied().unwrap_or(0);
        self.portals.insert(portal.to_owned(), n);
    }

    /// The statement an `Execute` of `portal` runs (0: unknown).
    pub fn portal(&self, portal: &str) -> u64 {
        self.portals.get(portal).copied().unwrap_or(0)
    }

    /// An `Execute` of `portal` is about to go upstream; returns the
    /// statement it runs. A data-changing one (or one the trail cannot
    /// place) is recorded and made durable first.
    pub fn execute(&mut self, portal: &str) -> u64 {
        let n = self.portal(portal);
        if n == 0 || self.changing.contains(&n) {
            self.events.push(Event::Execute {
                session: self.session,
                identity: self.identity.clone(),
                statement: n,
                portal: portal.to_owned(),
            });
            self.durable = true;
            self.forwards = true;
        }
        n
    }

    /// Hand pending records to the log; waits for durability when one of
    /// them must be durable before its statement is forwarded.
    pub async fn commit(&mut self, audit: &Audit) -> Result<(), AuditError> {
        if self.events.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.events);
        let forwards = std::mem::take(&mut self.forwards);
        let result = if std::mem::take(&mut self.durable) {
            audit.append_all(events).await
        } else {
            let mut r = Ok(());
            for e in events {
                r = audit.enqueue(e).await;
                if r.is_err() {
                    break;
                }
            }
            r
        };
        match result {
            // Only refusals were pending: nothing goes upstream unrecorded,
            // so the session lives on and each statement gets its error.
            Err(e) if !forwards => {
                tracing::warn!(error = %e, "refused statements could not be recorded");
                Ok(())
            }
            r => r,
        }
    }
}

enum Inflight {
    Query {
        statement: u64,
        started: Instant,
        tags: Vec<String>,
        sqlstate: Option<String>,
    },
    Execute {
        statement: u64,
        started: Instant,
    },
    Sync,
}

/// The in-flight requests of one session.
pub struct Tracker {
    session: u64,
    identity: String,
    queue: Mutex<VecDeque<Inflight>>,
}

impl Tracker {
    pub fn new(session: u64, identity: &str) -> Tracker {
        Tracker {
            session,
            identity: identity.to_owned(),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Inflight>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `Query` (statement `statement`) was sent upstream.
    pub fn query(&self, statement: u64) {
        self.lock().push_back(Inflight::Query {
            statement,
            started: Instant::now(),
            tags: Vec::new(),
            sqlstate: None,
        });
    }

    /// An `Execute` of a portal made from statement `statement` was sent.
    pub fn execute(&self, statement: u64) {
        self.lock().push_back(Inflight::Execute {
            statement,
            started: Instant::now(),
        });
    }

    pub fn sync(&self) {
        self.lock().push_back(Inflight::Sync);
    }

    /// One response frame from PostgreSQL; returns the outcomes it ends.
    pub fn on_backend(&self, frame: &Frame) -> Vec<Event> {
        let mut q = self.lock();
        let mut out = Vec::new();
        match frame.tag() {
            b'C' => {
                let tag = cstring(frame.body());
                match q.front_mut() {
                    Some(Inflight::Query { tags, .. }) => tags.push(tag),
                    Some(Inflight::Execute { .. }) => {
                        if let Some(Inflight::Execute { statement, started }) = q.pop_front() {
                            out.push(self.outcome(statement, started, "ok", vec![tag], None));
                        }
                    }
                    _ => {}
                }
            }
            b'I' | b's' => {
                if matches!(q.front(), Some(Inflight::Execute { .. }))
                    && let Some(Inflight::Execute { statement, started }) = q.pop_front()
                {
                    out.push(self.outcome(statement, started, "ok", vec![], None));
                }
            }
            b'E' => {
                let code =
                    ErrorFields::decode(&frame.bytes).and_then(|f| f.code().map(str::to_owned));
                match q.front_mut() {
                    Some(Inflight::Query { sqlstate, .. }) => {
                        sqlstate.get_or_insert(code.unwrap_or_default());
                    }
                    Some(Inflight::Execute { .. }) => {
                        if let Some(Inflight::Execute { statement, started }) = q.pop_front() {
                            out.push(self.outcome(statement, started, "error", vec![], code));
                        }
                    }
                    _ => {}
                }
            }
            b'Z' => {
                // Everything up to this Sync (or Query) is over.
                while let Some(item) = q.pop_front() {
                    match item {
                        Inflight::Execute { statement, started } => {
                            out.push(self.outcome(statement, started, "skipped", vec![], None));
                        }
                        Inflight::Query {
                            statement,
                            started,
                            tags,
                            sqlstate,
                        } => {
                            let outcome = if sqlstate.is_some() { "error" } else { "ok" };
                            out.push(self.outcome(statement, started, outcome, tags, sqlstate));
                            break;
                        }
                        Inflight::Sync => break,
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn outcome(
        &self,
        statement: u64,
        started: Instant,
        outcome: &'static str,
        tags: Vec<String>,
        sqlstate: Option<String>,
    ) -> Event {
        let rows = tags
            .iter()
            .filter_map(|t| t.rsplit(' ').next()?.parse::<u64>().ok())
            .reduce(|a, b| a + b);
        Event::Outcome {
            session: self.session,
            identity: self.identity.clone(),
            statement,
            outcome,
            tags,
            rows,
            sqlstate,
            duration_ms: (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        }
    }
}

fn cstring(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(4 + body.len() as i32);
        b.put_slice(body);
        Frame { bytes: b }
    }

    fn error(code: &str) -> Frame {
        let mut body = Vec::new();
        body.extend_from_slice(b"SERROR\0C");
        body.extend_from_slice(code.as_bytes());
        body.extend_from_slice(b"\0Mboom\0\0");
        frame(b'E', &body)
    }

    fn summary(events: Vec<Event>) -> Vec<(u64, &'static str, Option<u64>, Option<String>)> {
        events
            .into_iter()
            .map(|e| match e {
                Event::Outcome {
                    statement,
                    outcome,
                    rows,
                    sqlstate,
                    ..
                } => (statement, outcome, rows, sqlstate),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn simple_queries_end_at_ready_for_query_with_all_their_tags() {
        let t = Tracker::new(1, "alice");
        t.query(1);
        assert!(t.on_backend(&frame(b'C', b"DELETE 3\0")).is_empty());
        assert!(t.on_backend(&frame(b'C', b"INSERT 0 2\0")).is_empty());
        let done = summary(t.on_backend(&frame(b'Z', b"I")));
        assert_eq!(done, vec![(1, "ok", Some(5), None)]);
        t.query(2);
        t.on_backend(&error("42P01"));
        let done = summary(t.on_backend(&frame(b'Z', b"I")));
        assert_eq!(done, vec![(2, "error", None, Some("42P01".into()))]);
    }

    #[test]
    fn pipelines_pair_executes_and_mark_the_skipped_ones() {
        let t = Tracker::new(1, "alice");
        t.execute(1);
        t.execute(2);
        t.execute(3);
        t.sync();
        t.execute(4);
        t.sync();
        assert_eq!(
            summary(t.on_backend(&frame(b'C', b"UPDATE 1\0"))),
            vec![(1, "ok", Some(1), None)]
        );
        assert_eq!(
            summary(t.on_backend(&error("23505"))),
            vec![(2, "error", None, Some("23505".into()))]
        );
        assert_eq!(
            summary(t.on_backend(&frame(b'Z', b"I"))),
            vec![(3, "skipped", None, None)]
        );
        assert_eq!(
            summary(t.on_backend(&frame(b'C', b"SELECT 7\0"))),
            vec![(4, "ok", Some(7), None)]
        );
        assert!(t.on_backend(&frame(b'Z', b"I")).is_empty());
    }
}
