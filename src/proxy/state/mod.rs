//! One model of a session's state in PostgreSQL: the prepared statements
//! and portals that exist, and the requests still waiting for an answer.
//!
//! The frontend tells the model what it forwards (`parse`, `bind`,
//! `execute`, `query`, …); nothing it asks for changes the tables of
//! statements and portals. Those change only when PostgreSQL answers:
//! `ParseComplete`, `BindComplete`, `CloseComplete`, the command tag of a
//! `PREPARE` / `DEALLOCATE` / `DISCARD ALL` / `DECLARE` / `CLOSE`, and
//! `ReadyForQuery` (a transaction's end drops its portals). Messages
//! PostgreSQL skips after an error (everything up to `Sync`, simple
//! queries included) are skipped in the model too, so a skipped `Close`
//! or `Parse` never changes what the firewall believes, and outcome records
//! stay with their own statements.
//!
//! For decisions the frontend looks names up *as PostgreSQL will see them
//! when it reaches the message*. Changes sent earlier in the same segment
//! (since the last `Sync` or `Query`) count as done: if one fails,
//! PostgreSQL skips the rest of the segment. A change behind a boundary
//! may or may not have happened, so the lookup is [`Lookup::Unsettled`]
//! and the frontend waits for PostgreSQL's answer before it decides.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::audit::Event;
use crate::classify::{Class, SessionEffect};
use crate::policy::inspect::Held;
use crate::protocol::{ErrorFields, Frame};

/// Prepared statements, portals and unanswered requests one session may
/// have; past this a Parse or Bind is refused rather than let the model
/// grow without bound.
pub const MAX_NAMES: usize = 100_000;

/// What an execution of a statement needs.
#[derive(Debug)]
pub enum Gate {
    /// A read: runs as often as the client likes, without a record each.
    Free,
    /// Allowed and not a read: every execution is recorded durably first.
    Recorded,
    /// The policy holds it: every `Bind` of it needs its own approval, for
    /// the parameter values it carries.
    Approval(Box<Held>),
    /// Never executed through the protocol (a denied statement, or a SQL
    /// cursor that is not a plain read).
    Refused,
}

/// A prepared statement as the firewall knows it.
#[derive(Debug)]
pub struct Statement {
    /// The text PostgreSQL runs (for a SQL `PREPARE`, the whole string
    /// that prepared it).
    pub text: Arc<str>,
    /// The audit record that defined it.
    pub record: u64,
    pub class: Option<Class>,
    pub gate: Gate,
    /// What running it does to the session's names (a `PREPARE` or
    /// `DEALLOCATE` sent as a protocol statement).
    pub effect: Option<Effect>,
    /// The parameter types its `Parse` gave (OIDs; 0: inferred).
    pub param_types: Vec<u32>,
    /// See [`crate::policy::inspect::Inspection::rollback_undoes`].
    pub rollback_undoes: bool,
}

impl Statement {
    pub fn new(text: Arc<str>, record: u64, class: Option<Class>, gate: Gate) -> Arc<Statement> {
        Arc::new(Statement {
            text,
            record,
            class,
            gate,
            effect: None,
            param_types: Vec::new(),
            rollback_undoes: false,
        })
    }
}

/// A portal: a bound statement, ready to execute.
#[derive(Debug)]
pub struct Portal {
    pub statement: Arc<Statement>,
    /// The approval this portal's one execution was granted under.
    pub approval: Option<String>,
    /// An approved portal has run (it runs once).
    spent: AtomicBool,
    /// A `WITH HOLD` cursor, which outlives its transaction.
    holdable: bool,
    /// Made by a protocol `Bind` (not a SQL `DECLARE`).
    pub bound: bool,
}

impl Portal {
    /// Whether this execution is allowed: an approved portal runs once.
    pub fn take_run(&self) -> bool {
        self.approval.is_none() || !self.spent.swap(true, Ordering::Relaxed)
    }
}

/// A name as PostgreSQL will resolve it when it reaches the message.
#[derive(Debug)]
pub enum Lookup<T> {
    Found(Arc<T>),
    Missing,
    /// A change sent behind a `Sync` or `Query` is not answered yet.
    Unsettled,
    /// PostgreSQL will not run this message as a command: it is skipping
    /// until `Sync` after an error, or reading COPY data.
    Skipped,
}

/// A change to the session's names one statement makes.
#[derive(Debug, Clone)]
pub struct Effect {
    pub what: SessionEffect,
    /// For `PREPARE` and `DECLARE`: what the name will stand for.
    pub statement: Option<Arc<Statement>>,
}

/// A request sent upstream and not answered yet.
#[derive(Debug)]
enum Step {
    Parse {
        name: Box<str>,
        statement: Arc<Statement>,
    },
    Bind {
        name: Box<str>,
        portal: Arc<Portal>,
    },
    Describe,
    Close {
        portal: bool,
        name: Box<str>,
    },
    Execute {
        run: Run,
        effect: Option<Effect>,
    },
    Query {
        run: Run,
        tags: Vec<String>,
        sqlstate: Option<String>,
        effects: Vec<Effect>,
    },
    Sync,
    /// The client ended a COPY (`CopyDone` / `CopyFail`).
    CopyEnd,
}

/// Something sent to run, for its outcome record: the statement record it
/// ran, when it was sent, and the approval it ran under if it was held.
#[derive(Debug)]
struct Run {
    record: u64,
    started: Instant,
    approval: Option<String>,
}

impl Run {
    fn new(record: u64, approval: Option<String>) -> Run {
        Run {
            record,
            started: Instant::now(),
            approval,
        }
    }
}

/// The model lost step with PostgreSQL: the session must end.
#[derive(Debug, thiserror::Error)]
#[error("infraveil lost track of the session's state ({0})")]
pub struct Desync(pub String);

#[derive(Default)]
struct Inner {
    statements: HashMap<Box<str>, Arc<Statement>>,
    portals: HashMap<Box<str>, Arc<Portal>>,
    queue: VecDeque<Step>,
    /// Names changed since the last boundary the frontend sent (`None`:
    /// closed), for lookups ahead of PostgreSQL's answers.
    open_statements: HashMap<Box<str>, Option<Arc<Statement>>>,
    open_portals: HashMap<Box<str>, Option<Arc<Portal>>>,
    /// `Sync`s and `Query`s in `queue`.
    boundaries: usize,
    syncs: usize,
    /// PostgreSQL reported an error in the extended protocol and skips
    /// messages until the next `Sync`.
    skipping: bool,
    /// Statements of the current `Query` PostgreSQL has completed.
    completed: usize,
    /// PostgreSQL is reading COPY data and the client has not ended it:
    /// it ignores `Sync` meanwhile.
    copying: bool,
    /// The transaction status of the last `ReadyForQuery` (`I`, `T`, `E`);
    /// `0` before the first.
    status: u8,
}

/// The model, shared by the session's two directions.
pub struct SessionState {
    session: u64,
    identity: String,
    inner: Mutex<Inner>,
    answered: Notify,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (statements, portals) = self.names();
        f.debug_struct("SessionState")
            .field("session", &self.session)
            .field("statements", &statements)
            .field("portals", &portals)
            .finish()
    }
}

impl SessionState {
    pub fn new(session: u64, identity: &str) -> SessionState {
        SessionState {
            session,
            identity: identity.to_owned(),
            inner: Mutex::default(),
            answered: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- what the frontend forwards ---

    pub fn parse(&self, name: &str, statement: Arc<Statement>) {
        let mut g = self.lock();
        g.open_statements
            .insert(name.into(), Some(statement.clone()));
        g.queue.push_back(Step::Parse {
            name: name.into(),
            statement,
        });
    }

    /// A `Bind` of `statement` into portal `name`.
    pub fn bind(
        &self,
        name: &str,
        statement: Arc<Statement>,
        approval: Option<String>,
    ) -> Arc<Portal> {
        let mut g = self.lock();
        let portal = Arc::new(Portal {
            statement,
            approval,
            spent: AtomicBool::new(false),
            holdable: false,
            bound: true,
        });
        g.open_portals.insert(name.into(), Some(portal.clone()));
        g.queue.push_back(Step::Bind {
            name: name.into(),
            portal: portal.clone(),
        });
        portal
    }

    pub fn describe(&self) {
        self.lock().queue.push_back(Step::Describe);
    }

    pub fn close(&self, portal: bool, name: &str) {
        let mut g = self.lock();
        if portal {
            g.open_portals.insert(name.into(), None);
        } else {
            g.open_statements.insert(name.into(), None);
        }
        g.queue.push_back(Step::Close {
            portal,
            name: name.into(),
        });
    }

    /// An `Execute` of a portal made from statement record `record` (0:
    /// refused, it runs nothing), run under `approval` if it was held.
    pub fn execute(&self, record: u64, effect: Option<Effect>, approval: Option<String>) {
        let mut g = self.lock();
        // What running it does to the names counts for the rest of the
        // segment, like a Parse or Close sent before.
        if let Some(e) = &effect {
            g.open_effect(e);
        }
        g.queue.push_back(Step::Execute {
            run: Run::new(record, approval),
            effect,
        });
    }

    pub fn sync(&self) {
        let mut g = self.lock();
        if g.copying {
            return;
        }
        g.boundary();
        g.syncs += 1;
        g.queue.push_back(Step::Sync);
    }

    /// `CopyDone` or `CopyFail`.
    pub fn copy_end(&self) {
        let mut g = self.lock();
        if g.copying {
            g.copying = false;
        } else {
            g.queue.push_back(Step::CopyEnd);
        }
    }

    /// A simple `Query` (statement record `record`, run under `approval`
    /// if it was held) and the changes its statements make to the
    /// session's names, in order.
    pub fn query(&self, record: u64, effects: Vec<Effect>, approval: Option<String>) {
        let mut g = self.lock();
        g.boundary();
        g.queue.push_back(Step::Query {
            run: Run::new(record, approval),
            tags: Vec::new(),
            sqlstate: None,
            effects,
        });
    }

    // --- lookups for decisions ---

    pub fn statement(&self, name: &str) -> Lookup<Statement> {
        let g = self.lock();
        g.resolve(&g.open_statements, &g.statements, name)
    }

    pub fn portal(&self, name: &str) -> Lookup<Portal> {
        let g = self.lock();
        g.resolve(&g.open_portals, &g.portals, name)
    }

    /// The transaction status PostgreSQL last reported, if it has answered
    /// everything sent since (otherwise nobody knows it yet).
    pub fn idle_status(&self) -> Option<u8> {
        let g = self.lock();
        (g.queue.is_empty() && g.status != 0).then_some(g.status)
    }

    /// Wait until lookups are settled: PostgreSQL has answered every
    /// `Sync` and `Query` sent, or it is skipping what is still queued
    /// (an error before them, no `Sync` since) and will answer none of it.
    pub async fn settled(&self) {
        loop {
            let notified = self.answered.notified();
            {
                let g = self.lock();
                if g.boundaries == 0 || g.copying || (g.skipping && g.syncs == 0) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The confirmed names, sorted (for tests and diagnostics).
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let g = self.lock();
        let mut s: Vec<String> = g.statements.keys().map(|k| k.to_string()).collect();
        let mut p: Vec<String> = g.portals.keys().map(|k| k.to_string()).collect();
        s.sort();
        p.sort();
        (s, p)
    }

    /// Whether the model holds more names than a session may.
    pub fn oversized(&self) -> bool {
        let g = self.lock();
        g.statements.len()
            + g.portals.len()
            + g.open_statements.len()
            + g.open_portals.len()
            + g.queue.len()
            > MAX_NAMES
    }

    // --- what PostgreSQL answers ---

    /// One message from PostgreSQL. Returns the outcome records it ends.
    pub fn on_backend(&self, frame: &Frame) -> Result<Vec<Event>, Desync> {
        let mut out = Vec::new();
        let mut g = self.lock();
        let g = &mut *g;
        // A COPY's end outside COPY is ignored by PostgreSQL too.
        while matches!(g.queue.front(), Some(Step::CopyEnd)) {
            g.queue.pop_front();
        }
        match frame.tag() {
            b'G' => {
                g.copy_in();
                self.answered.notify_waiters();
            }
            b'1' => match g.pop_front() {
                Some(Step::Parse { name, statement }) => {
                    g.statements.insert(name, statement);
                }
                other => return Err(unexpected("ParseComplete", other)),
            },
            b'2' => match g.pop_front() {
                Some(Step::Bind { name, portal }) => {
                    g.portals.insert(name, portal);
                }
                other => return Err(unexpected("BindComplete", other)),
            },
            b'3' => match g.pop_front() {
                Some(Step::Close { portal, name }) => {
                    if portal {
                        g.portals.remove(&name);
                    } else {
                        g.statements.remove(&name);
                    }
                }
                other => return Err(unexpected("CloseComplete", other)),
            },
            // A statement's Describe ends with its row description (or
            // NoData); a Query's or Execute's rows are described too.
            b'T' | b'n' => {
                if matches!(g.queue.front(), Some(Step::Describe)) {
                    g.pop_front();
                }
            }
            b'C' => {
                let tag = cstring(frame.body());
                // A COPY ends with its command's completion.
                g.copying = false;
                match g.queue.front_mut() {
                    Some(Step::Query { effects, tags, .. }) => {
                        let effect = effects
                            .get_mut(g.completed)
                            .map(|e| (std::mem::take(&mut e.what), e.statement.take()));
                        tags.push(tag.clone());
                        g.completed += 1;
                        g.apply(&tag, effect)?;
                    }
                    Some(Step::Execute { .. }) => {
                        if let Some(Step::Execute { run, effect }) = g.pop_front() {
                            g.apply(&tag, effect.map(|e| (e.what, e.statement)))?;
                            out.push(self.outcome(run, "ok", vec![tag], None));
                        }
                    }
                    _ => {}
                }
            }
            b'I' | b's' => {
                if matches!(g.queue.front(), Some(Step::Execute { .. }))
                    && let Some(Step::Execute { run, .. }) = g.pop_front()
                {
                    out.push(self.outcome(run, "ok", vec![], None));
                }
            }
            b'E' => {
                let code =
                    ErrorFields::decode(&frame.bytes).and_then(|f| f.code().map(str::to_owned));
                // A COPY that fails is over: PostgreSQL reads messages
                // again (and Syncs count again).
                g.copying = false;
                // The transaction's portals stay: nothing runs in an aborted
                // transaction, ROLLBACK TO SAVEPOINT revives those made
                // before it, and ROLLBACK ends them (ReadyForQuery idle).
                match g.queue.front_mut() {
                    Some(Step::Query { sqlstate, .. }) => {
                        sqlstate.get_or_insert(code.unwrap_or_default());
                    }
                    // A commit at Sync failed; ReadyForQuery follows.
                    Some(Step::Sync) | None => {}
                    Some(_) => {
                        match g.pop_front() {
                            Some(Step::Execute { run, .. }) => {
                                out.push(self.outcome(run, "error", vec![], code));
                            }
                            // An unnamed Parse drops the old unnamed
                            // statement before it can fail.
                            Some(Step::Parse { name, .. }) if name.is_empty() => {
                                g.statements.remove("");
                            }
                            _ => {}
                        }
                        g.skipping = true;
                        self.answered.notify_waiters();
                    }
                }
            }
            b'Z' => {
                let status = frame.body().first().copied().unwrap_or(b'I');
                loop {
                    match g.pop_front() {
                        Some(Step::Sync) => break,
                        Some(Step::Query {
                            run,
                            tags,
                            sqlstate,
                            ..
                        }) if !g.skipping => {
                            // A Query drops the unnamed statement first.
                            g.statements.remove("");
                            g.portals.remove("");
                            let outcome = if sqlstate.is_some() { "error" } else { "ok" };
                            out.push(self.outcome(run, outcome, tags, sqlstate));
                            break;
                        }
                        // Skipped by PostgreSQL after an error.
                        Some(Step::Execute { run, .. } | Step::Query { run, .. }) => {
                            out.push(self.outcome(run, "skipped", vec![], None));
                        }
                        Some(other) if g.skipping => drop(other),
                        Some(other) => return Err(unexpected("ReadyForQuery", Some(other))),
                        None => return Err(Desync("ReadyForQuery for no request".into())),
                    }
                }
                g.skipping = false;
                g.status = status;
                if status == b'I' {
                    g.portals.retain(|_, p| p.holdable);
                }
                self.answered.notify_waiters();
            }
            _ => {}
        }
        Ok(out)
    }

    fn outcome(
        &self,
        run: Run,
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
            statement: run.record,
            outcome,
            tags,
            rows,
            sqlstate,
            approval: run.approval,
            duration_ms: (run.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        }
    }
}

impl Inner {
    /// `name` as PostgreSQL will resolve it after what was sent so far:
    /// changes in the open segment first, then (if nothing sent is still
    /// unanswered) the confirmed table.
    fn resolve<T>(
        &self,
        open: &HashMap<Box<str>, Option<Arc<T>>>,
        confirmed: &HashMap<Box<str>, Arc<T>>,
        name: &str,
    ) -> Lookup<T> {
        // PostgreSQL runs nothing now: it is reading COPY data, or skipping
        // until a Sync after an error.
        if self.copying || (self.skipping && self.syncs == 0) {
            return Lookup::Skipped;
        }
        match open.get(name) {
            Some(Some(x)) => Lookup::Found(x.clone()),
            Some(None) => Lookup::Missing,
            None if self.boundaries > 0 => Lookup::Unsettled,
            None => confirmed
                .get(name)
                .map_or(Lookup::Missing, |x| Lookup::Found(x.clone())),
        }
    }

    /// The frontend sent a `Sync` or `Query`: what it sends next is judged
    /// against PostgreSQL's answers, not against assumptions.
    fn boundary(&mut self) {
        self.open_statements.clear();
        self.open_portals.clear();
        self.boundaries += 1;
    }

    /// PostgreSQL started reading COPY data for the request in front: the
    /// `Sync`s the client sent before ending the COPY are ignored.
    fn copy_in(&mut self) {
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i] {
                Step::Sync => {
                    self.queue.remove(i);
                    self.boundaries -= 1;
                    self.syncs -= 1;
                }
                Step::CopyEnd => {
                    self.queue.remove(i);
                    return;
                }
                _ => i += 1,
            }
        }
        self.copying = true;
    }

    /// A statement that changes names was sent: lookups for the rest of
    /// the segment see the change (if it fails, PostgreSQL skips them).
    fn open_effect(&mut self, e: &Effect) {
        let forget_statements = |g: &mut Inner| {
            let names: Vec<Box<str>> = g
                .statements
                .keys()
                .chain(g.open_statements.keys())
                .filter(|k| !k.is_empty())
                .cloned()
                .collect();
            for n in names {
                g.open_statements.insert(n, None);
            }
        };
        let forget_portals = |g: &mut Inner| {
            let names: Vec<Box<str>> = g
                .portals
                .keys()
                .chain(g.open_portals.keys())
                .cloned()
                .collect();
            for n in names {
                g.open_portals.insert(n, None);
            }
        };
        match (&e.what, &e.statement) {
            (SessionEffect::Prepare(name), Some(s)) => {
                self.open_statements
                    .insert(name.as_str().into(), Some(s.clone()));
            }
            (SessionEffect::Deallocate(name), _) => {
                self.open_statements.insert(name.as_str().into(), None);
            }
            (SessionEffect::DeallocateAll, _) => forget_statements(self),
            (SessionEffect::DiscardAll, _) => {
                forget_statements(self);
                forget_portals(self);
            }
            (SessionEffect::Declare { name, .. }, Some(statement)) => {
                let portal = Portal {
                    statement: statement.clone(),
                    approval: None,
                    spent: AtomicBool::new(false),
                    holdable: false,
                    bound: false,
                };
                self.open_portals
                    .insert(name.as_str().into(), Some(Arc::new(portal)));
            }
            (SessionEffect::Close(name), _) => {
                self.open_portals.insert(name.as_str().into(), None);
            }
            (SessionEffect::CloseAll, _) => forget_portals(self),
            _ => {}
        }
    }

    fn pop_front(&mut self) -> Option<Step> {
        let step = self.queue.pop_front()?;
        match step {
            Step::Sync => {
                self.boundaries -= 1;
                self.syncs -= 1;
            }
            Step::Query { .. } => {
                self.boundaries -= 1;
                self.completed = 0;
            }
            _ => {}
        }
        Some(step)
    }

    /// A statement of a `Query` completed with `tag`: apply what it does
    /// to the session's names.
    fn apply(
        &mut self,
        tag: &str,
        effect: Option<(SessionEffect, Option<Arc<Statement>>)>,
    ) -> Result<(), Desync> {
        let (what, statement) = effect.unwrap_or((SessionEffect::Unknown, None));
        let changes = matches!(
            tag,
            "PREPARE"
                | "DEALLOCATE"
                | "DEALLOCATE ALL"
                | "DISCARD ALL"
                | "DECLARE CURSOR"
                | "CLOSE CURSOR"
                | "CLOSE CURSOR ALL"
        );
        if !changes {
            return Ok(());
        }
        if what.tag() != Some(tag) {
            return Err(Desync(format!(
                "PostgreSQL completed {tag} where {what:?} was expected"
            )));
        }
        match (what, statement) {
            (SessionEffect::Prepare(name), Some(s)) => {
                self.statements.insert(name.into(), s);
            }
            (SessionEffect::Deallocate(name), _) => {
                self.statements.remove(name.as_str());
            }
            // Only named statements: the unnamed one is not PREPAREd.
            (SessionEffect::DeallocateAll, _) => self.statements.retain(|k, _| k.is_empty()),
            (SessionEffect::DiscardAll, _) => {
                self.statements.retain(|k, _| k.is_empty());
                self.portals.clear();
            }
            (SessionEffect::Declare { name, hold }, Some(statement)) => {
                let portal = Portal {
                    statement,
                    approval: None,
                    spent: AtomicBool::new(false),
                    holdable: hold,
                    bound: false,
                };
                self.portals.insert(name.into(), Arc::new(portal));
            }
            (SessionEffect::Close(name), _) => {
                self.portals.remove(name.as_str());
            }
            (SessionEffect::CloseAll, _) => self.portals.clear(),
            (what, _) => return Err(Desync(format!("{what:?} without its statement"))),
        }
        Ok(())
    }
}

fn unexpected(what: &str, step: Option<Step>) -> Desync {
    let waiting = match step {
        None => "nothing",
        Some(Step::Parse { .. }) => "Parse",
        Some(Step::Bind { .. }) => "Bind",
        Some(Step::Describe) => "Describe",
        Some(Step::Close { .. }) => "Close",
        Some(Step::Execute { .. }) => "Execute",
        Some(Step::Query { .. }) => "Query",
        Some(Step::Sync) => "Sync",
        Some(Step::CopyEnd) => "CopyDone",
    };
    Desync(format!("{what} while waiting for {waiting}"))
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

    fn read(n: u64) -> Arc<Statement> {
        Statement::new(Arc::from("SELECT 1"), n, Some(Class::Read), Gate::Free)
    }

    fn outcomes(events: Vec<Event>) -> Vec<(u64, &'static str)> {
        events
            .into_iter()
            .map(|e| match e {
                Event::Outcome {
                    statement, outcome, ..
                } => (statement, outcome),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn names_change_only_when_postgres_confirms() {
        let m = SessionState::new(1, "a");
        m.parse("s1", read(1));
        m.sync();
        // Asked, not answered: the name is unsettled for the next segment.
        assert!(matches!(m.statement("s1"), Lookup::Unsettled));
        m.on_backend(&frame(b'1', b"")).unwrap();
        m.on_backend(&frame(b'Z', b"I")).unwrap();
        assert!(matches!(m.statement("s1"), Lookup::Found(_)));
        // A second Parse of s1 that PostgreSQL refuses keeps the first.
        m.parse("s1", read(2));
        assert!(matches!(m.statement("s1"), Lookup::Found(s) if s.record == 2));
        m.sync();
        m.on_backend(&error("42P05")).unwrap();
        m.on_backend(&frame(b'Z', b"I")).unwrap();
        assert!(matches!(m.statement("s1"), Lookup::Found(s) if s.record == 1));
    }

    #[test]
    fn messages_after_an_error_are_skipped_until_sync() {
        let m = SessionState::new(1, "a");
        m.parse("s1", read(1));
        m.sync();
        m.on_backend(&frame(b'1', b"")).unwrap();
        m.on_backend(&frame(b'Z', b"I")).unwrap();
        // A failing Bind, a Close and a Query PostgreSQL will skip.
        m.bind("", read(1), None);
        m.close(false, "s1");
        m.on_backend(&error("08P01")).unwrap();
        assert!(matches!(m.statement("s1"), Lookup::Skipped));
        m.query(7, Vec::new(), None);
        m.sync();
        let done = outcomes(m.on_backend(&frame(b'Z', b"I")).unwrap());
        assert_eq!(done, vec![(7, "skipped")]);
        assert_eq!(m.names().0, vec!["s1"], "the skipped Close changed nothing");
    }

    #[test]
    fn outcomes_pair_with_their_own_requests() {
        let m = SessionState::new(1, "a");
        m.execute(1, None, None);
        m.execute(2, None, None);
        m.execute(3, None, None);
        m.sync();
        m.execute(4, None, None);
        m.sync();
        let o = |f| outcomes(m.on_backend(&f).unwrap());
        assert_eq!(o(frame(b'C', b"UPDATE 1\0")), vec![(1, "ok")]);
        assert_eq!(o(error("23505")), vec![(2, "error")]);
        assert_eq!(o(frame(b'Z', b"I")), vec![(3, "skipped")]);
        assert_eq!(o(frame(b'C', b"SELECT 7\0")), vec![(4, "ok")]);
        assert!(o(frame(b'Z', b"I")).is_empty());
    }

    #[test]
    fn sql_prepare_and_deallocate_share_the_namespace() {
        let m = SessionState::new(1, "a");
        let effects = vec![
            Effect {
                what: SessionEffect::Prepare("d".into()),
                statement: Some(read(5)),
            },
            Effect {
                what: SessionEffect::None,
                statement: None,
            },
        ];
        m.query(5, effects, None);
        m.on_backend(&frame(b'C', b"PREPARE\0")).unwrap();
        m.on_backend(&frame(b'C', b"SELECT 1\0")).unwrap();
        m.on_backend(&frame(b'Z', b"I")).unwrap();
        assert!(matches!(m.statement("d"), Lookup::Found(s) if s.record == 5));
        m.close(false, "d");
        m.sync();
        m.on_backend(&frame(b'3', b"")).unwrap();
        m.on_backend(&frame(b'Z', b"I")).unwrap();
        assert!(matches!(m.statement("d"), Lookup::Missing));
        // A tag the model cannot place ends the session.
        m.query(6, Vec::new(), None);
        assert!(m.on_backend(&frame(b'C', b"DEALLOCATE ALL\0")).is_err());
    }

    #[test]
    fn a_sync_during_copy_is_ignored_like_postgres_does() {
        let m = SessionState::new(1, "a");
        m.bind("", read(1), None);
        m.execute(1, None, None);
        m.sync();
        m.on_backend(&frame(b'2', b"")).unwrap();
        m.on_backend(&frame(b'G', b"")).unwrap();
        m.copy_end();
        m.sync();
        m.on_backend(&frame(b'C', b"COPY 3\0")).unwrap();
        m.on_backend(&frame(b'Z', b"I")).unwrap();
        assert!(
            matches!(m.statement("x"), Lookup::Missing),
            "nothing left unanswered"
        );
    }

    #[test]
    fn an_approved_portal_runs_once() {
        let m = SessionState::new(1, "a");
        let p = m.bind("", read(1), Some("a-1".into()));
        assert!(p.take_run());
        assert!(!p.take_run());
        let free = m.bind("", read(1), None);
        assert!(free.take_run() && free.take_run());
    }
}
