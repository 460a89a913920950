//! A session's statements in the audit log: [`Trail`] numbers each
//! statement, records it with its decision, records each execution of a
//! statement that is not a read, and makes those records durable before
//! the statement is forwarded. Outcomes (what PostgreSQL answered) are
//! paired with their statements by the session model (`state.rs`).

use crate::audit::{Audit, AuditError, Event};
use crate::classify::Class;
use crate::inspect::SessionInfo;

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

/// The frontend's side: statement numbers and records not yet handed to
/// the log.
pub struct Trail {
    session: u64,
    identity: String,
    role: String,
    grant: String,
    next: u64,
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
        // A Parse runs nothing; each Execute of it gets its own durable
        // record, which makes this one durable too (the log is ordered).
        self.durable |= changes && d.decision == "allow" && via != "parse";
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

    /// An `Execute` of `portal`, made from statement `statement` (a
    /// statement that is not a read), is about to go upstream: it is
    /// recorded and made durable first.
    pub fn execute(&mut self, statement: u64, portal: &str) {
        self.events.push(Event::Execute {
            session: self.session,
            identity: self.identity.clone(),
            statement,
            portal: portal.to_owned(),
        });
        self.durable = true;
        self.forwards = true;
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
