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
//!
//! This file holds the model and what the frontend tells and asks it;
//! `backend.rs` holds how PostgreSQL's answers change it, one handler per
//! message.

mod backend;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::classify::{Class, SessionEffect};
use crate::policy::inspect::Held;

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
    /// The role limits the rows it may change: each `Bind` of it is
    /// planned with its values first.
    pub row_check: Option<Arc<crate::policy::limits::RowCheck>>,
    /// The policy generation it was judged under (see
    /// [`crate::proxy::Shared::policy_generation`]).
    pub generation: u64,
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
            row_check: None,
            generation: 0,
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
    /// The settings row estimates replay on their side connection.
    pub settings: crate::proxy::estimate::Settings,
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
            settings: Default::default(),
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

    /// `name` judged again after a policy reload: later lookups find the
    /// new judgement of the same text (what PostgreSQL holds is unchanged).
    pub fn rejudged(&self, name: &str, statement: Arc<Statement>) {
        let mut g = self.lock();
        if let Some(Some(s)) = g.open_statements.get_mut(name)
            && s.text == statement.text
        {
            *s = statement.clone();
        }
        if let Some(s) = g.statements.get_mut(name)
            && s.text == statement.text
        {
            *s = statement;
        }
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
}

#[cfg(test)]
mod tests;
