//! A session's statements in the audit log: [`Trail`] numbers each
//! statement, records it with its decision, records each execution of a
//! statement that is not a read, and decides which records must be durable
//! before which message goes upstream. Outcomes (what PostgreSQL answered)
//! are paired with their statements by the session model (`state/`).
//!
//! The rule: nothing that changes data is *committed* before its record is
//! durable. Outside an explicit transaction block a data-changing statement
//! commits as it runs, so its record is durable before it is forwarded.
//! Inside one (PostgreSQL said `T` and has answered everything sent since),
//! `write` and `ddl` statements go upstream at once and their records are
//! owed: the next message that can commit (one whose text could hold
//! `COMMIT`, `END`, `PREPARE TRANSACTION`, or a `Query` or `Sync` outside a
//! block) waits until they are durable. If the firewall dies first, the
//! connection drops and PostgreSQL rolls the block back. `destructive`,
//! `privileged` and `unknown` statements, approved ones, and statements
//! whose effects a rollback does not undo (sequences, `dblink`) stay
//! durable before they are forwarded.

use crate::audit::{Audit, AuditError, Event};
use crate::classify::Class;
use crate::policy::Action;
use crate::policy::inspect::{Inspection, SessionInfo};

/// Longest statement text kept in a record; longer text is cut and its
/// SHA-256 kept instead of the rest.
const MAX_TEXT: usize = 64 * 1024;

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
    /// A pending record belongs to a statement forwarded inside a block
    /// before it is durable.
    early: bool,
    /// Records handed to the log without waiting, inside a block, that no
    /// durable wait has covered since: owed before the next commit.
    owed: bool,
    /// A pending message may commit.
    commit_point: bool,
    /// Inside an explicit transaction block, as far as is known.
    block: bool,
}

/// Text that could end a transaction block: a keyword of `COMMIT`, `END`,
/// `PREPARE TRANSACTION`, `ROLLBACK` or `ABORT` anywhere in it, in any
/// case. Keywords cannot be spelled otherwise (no escapes, no comments
/// inside), so a text without these letters in a row cannot end a block;
/// one with them merely waits, when something is owed.
pub fn may_end_block(sql: &str) -> bool {
    contains_any(sql, &["commit", "end", "prepare", "rollback", "abort"])
}

fn contains_any(sql: &str, words: &[&str]) -> bool {
    let b = sql.as_bytes();
    words.iter().any(|w| {
        let w = w.as_bytes();
        b.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w))
    })
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
            early: false,
            owed: false,
            commit_point: false,
            block: false,
        }
    }

    /// Before a `Query`, `Execute` or `Sync`: what PostgreSQL last said of
    /// the transaction, when it has answered everything (see
    /// [`crate::proxy::state::SessionState::idle_status`]). With messages
    /// in flight the last knowledge stands.
    pub fn observe(&mut self, idle_status: Option<u8>) {
        if let Some(status) = idle_status {
            self.block = status == b'T';
        }
    }

    /// A `Sync`: outside a block it commits the implicit transaction.
    pub fn sync(&mut self) {
        if !self.block {
            self.commit_point = true;
        }
    }

    /// Whether `text` may end the block, looked for only where it matters:
    /// outside a block with nothing owed, ending it changes nothing.
    fn ends_block(&self, text: &str) -> bool {
        (self.block || self.owed || self.early) && may_end_block(text)
    }

    /// A message runs a text that `ends` the block or not (a `Query`, or
    /// an `Execute`).
    fn runs(&mut self, ends: bool, query: bool) {
        if ends || (query && !self.block) {
            self.commit_point = true;
        }
        if ends {
            self.block = false;
        }
    }

    /// Whether a data-changing statement of `class` may go upstream before
    /// its record is durable: inside a block, a plain write or DDL that
    /// the inspector showed a rollback undoes, not ending the block.
    fn may_go_early(&self, class: Option<Class>, rollback_undoes: bool, ends: bool) -> bool {
        self.block && rollback_undoes && !ends && matches!(class, Some(Class::Write | Class::Ddl))
    }

    /// An `Execute` of a read (no record of its own) running `text`.
    pub fn execute_read(&mut self, text: &str) {
        let ends = self.ends_block(text);
        self.runs(ends, false);
    }

    /// Record a statement and the inspection that decided it (its rule and
    /// tables move into the record); returns its number.
    pub fn statement(&mut self, via: &'static str, sql: &str, d: &mut Inspection) -> u64 {
        let decision = d.decision.action();
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
        // A Parse runs nothing; each Execute of it gets its own record,
        // which covers this one too (the log is ordered).
        let ends = self.ends_block(sql);
        if changes && decision == Action::Allow && via != "parse" {
            if self.may_go_early(d.class, d.rollback_undoes, ends) {
                self.early = true;
            } else {
                self.durable = true;
            }
        }
        if via == "query" {
            self.runs(ends, true);
        }
        self.forwards |= decision == Action::Allow;
        self.events.push(Event::Statement {
            session: self.session,
            statement: self.next,
            identity: self.identity.clone(),
            role: self.role.clone(),
            grant: self.grant.clone(),
            via,
            text,
            class: d.class.map(|c| c.to_string()),
            tables: std::mem::take(&mut d.tables),
            decision,
            rule: d.rule.take(),
            approval: None,
            ran: None,
        });
        self.next
    }

    /// An `Execute` of `portal`, made from statement `statement` (of
    /// `class`, not a read, running `text`), is about to go upstream: it is
    /// recorded, and durable first unless it may go early. `approved`
    /// executions are always durable first.
    pub fn execute(
        &mut self,
        (statement, class, text, rollback_undoes): (u64, Option<Class>, &str, bool),
        portal: &str,
        approved: bool,
    ) {
        self.events.push(Event::Execute {
            session: self.session,
            identity: self.identity.clone(),
            statement,
            portal: portal.to_owned(),
        });
        let ends = self.ends_block(text);
        if !approved && self.may_go_early(class, rollback_undoes, ends) {
            self.early = true;
        } else {
            self.durable = true;
        }
        self.runs(ends, false);
        self.forwards = true;
    }

    /// Hand pending records to the log; waits for durability when one of
    /// them must be durable before its statement is forwarded, or a
    /// pending message may commit records owed.
    pub async fn commit(&mut self, audit: &Audit) -> Result<(), AuditError> {
        let Some(batch) = self.take() else {
            return Ok(());
        };
        let result = if batch.wait {
            // Also a barrier when nothing is pending: the log is ordered,
            // so this wait covers every record handed to it before.
            let r = audit.append_all(batch.events).await;
            if r.is_ok() {
                self.owed = false;
            }
            r
        } else {
            self.owed |= batch.early;
            let mut r = Ok(());
            for e in batch.events {
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
            Err(e) if !batch.forwards => {
                tracing::warn!(error = %e, "refused statements could not be recorded");
                Ok(())
            }
            r => r,
        }
    }

    /// The pending records and whether to wait for them; `None` if there
    /// is nothing to hand over or wait for.
    fn take(&mut self) -> Option<Batch> {
        let early = std::mem::take(&mut self.early);
        let commit_point = std::mem::take(&mut self.commit_point);
        let wait = std::mem::take(&mut self.durable) || (commit_point && (self.owed || early));
        if self.events.is_empty() && !wait {
            return None;
        }
        Some(Batch {
            events: std::mem::take(&mut self.events),
            forwards: std::mem::take(&mut self.forwards) || wait,
            wait,
            early,
        })
    }
}

/// What [`Trail::commit`] hands to the log at once.
struct Batch {
    events: Vec<Event>,
    /// Wait until they (and everything before) are durable.
    wait: bool,
    /// Something in it goes upstream.
    forwards: bool,
    /// Something in it goes upstream before it is durable.
    early: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail() -> Trail {
        Trail::new(&SessionInfo::for_test("alice", "deployer"))
    }

    fn query(t: &mut Trail, class: Class, sql: &str) {
        t.statement(
            "query",
            sql,
            &mut Inspection {
                class: Some(class),
                rollback_undoes: !sql.contains("nextval"),
                ..crate::policy::inspect::Decision::Allow.into()
            },
        );
    }

    /// Hand over what is pending, as `commit` does with a log that takes
    /// everything: returns whether it waited.
    fn commit(t: &mut Trail) -> bool {
        match t.take() {
            Some(b) if b.wait => {
                t.owed = false;
                true
            }
            Some(b) => {
                t.owed |= b.early;
                false
            }
            None => false,
        }
    }

    #[test]
    fn writes_wait_before_they_go_up_outside_a_block_and_before_the_commit_inside_one() {
        let mut t = trail();
        // Autocommit: the write waits for its record.
        t.observe(Some(b'I'));
        query(&mut t, Class::Write, "INSERT INTO t VALUES (1)");
        assert!(commit(&mut t));
        // A read outside a block waits for nothing owed.
        query(&mut t, Class::Read, "SELECT 1");
        assert!(!commit(&mut t));

        // BEGIN answered: writes and DDL go at once; a read in the block
        // does not wait; the COMMIT does, once.
        t.observe(Some(b'T'));
        query(&mut t, Class::Write, "UPDATE t SET x = x + 1 WHERE id = 3");
        assert!(!commit(&mut t));
        t.observe(Some(b'T'));
        query(&mut t, Class::Ddl, "CREATE TABLE u (id int)");
        assert!(!commit(&mut t));
        t.observe(Some(b'T'));
        query(&mut t, Class::Read, "SELECT * FROM t");
        assert!(!commit(&mut t));
        t.observe(Some(b'T'));
        query(&mut t, Class::Read, "COMMIT");
        assert!(commit(&mut t), "the commit waits for what is owed");
        t.observe(Some(b'I'));
        query(&mut t, Class::Read, "SELECT 2");
        assert!(!commit(&mut t), "nothing owed any more");

        // In a block, what a rollback does not undo, and what is not a plain
        // write, waits before it goes up.
        for (class, sql) in [
            (Class::Write, "SELECT nextval('s')"),
            (Class::Destructive, "DELETE FROM t"),
            (Class::Privileged, "GRANT ALL ON t TO x"),
            (Class::Unknown, "FROB"),
            (Class::Write, "PREPARE TRANSACTION 'p'"),
        ] {
            t.observe(Some(b'T'));
            query(&mut t, class, sql);
            assert!(commit(&mut t), "{sql}");
        }

        // Early writes, then a message that may end the block: it waits,
        // and what follows (in flight, unknown) is durable first again.
        t.observe(Some(b'T'));
        query(&mut t, Class::Write, "INSERT INTO t VALUES (2)");
        assert!(!commit(&mut t));
        query(&mut t, Class::Read, "ROLLBACK");
        assert!(commit(&mut t));
        t.observe(None);
        query(&mut t, Class::Write, "INSERT INTO t VALUES (3)");
        assert!(commit(&mut t), "after ROLLBACK the block is not known");
    }

    #[test]
    fn the_extended_protocol_commits_at_sync_only_outside_a_block() {
        let mut t = trail();
        // In a block: Parse/Bind/Execute/Sync of a write, nothing waits.
        t.observe(Some(b'T'));
        t.observe(None);
        t.execute(
            (7, Some(Class::Write), "INSERT INTO t VALUES ($1)", true),
            "",
            false,
        );
        t.sync();
        assert!(!commit(&mut t));
        // An approved execution waits, block or not.
        t.observe(Some(b'T'));
        t.execute(
            (7, Some(Class::Write), "INSERT INTO t VALUES ($1)", true),
            "",
            true,
        );
        assert!(commit(&mut t));
        // Owed again, then an Execute of a prepared COMMIT waits.
        t.observe(Some(b'T'));
        t.execute(
            (7, Some(Class::Write), "INSERT INTO t VALUES ($1)", true),
            "",
            false,
        );
        assert!(!commit(&mut t));
        t.execute_read("COMMIT");
        assert!(commit(&mut t));
        // Outside a block the Execute itself waits, and so does the Sync
        // when something is owed.
        t.observe(Some(b'I'));
        t.execute(
            (7, Some(Class::Write), "INSERT INTO t VALUES ($1)", true),
            "",
            false,
        );
        t.sync();
        assert!(commit(&mut t));
        t.owed = true;
        t.observe(Some(b'I'));
        t.sync();
        assert!(commit(&mut t), "a Sync outside a block commits");
    }

    #[test]
    fn block_ending_words_are_found_in_any_case_and_nothing_else_is() {
        for yes in [
            "COMMIT",
            "end",
            "BEGIN; INSERT INTO t VALUES (1); CoMmIt",
            "PREPARE TRANSACTION 'x'",
            "rollback",
            "ABORT",
            "INSERT INTO weekend VALUES (1)",
        ] {
            assert!(may_end_block(yes), "{yes}");
        }
        for no in [
            "INSERT INTO t VALUES (1)",
            "UPDATE pgbench_accounts SET abalance = abalance + -12 WHERE aid = 5",
            "SELECT 1",
            "EN/**/D",
        ] {
            assert!(!may_end_block(no), "{no}");
        }
    }
}
