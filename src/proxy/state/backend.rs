//! The session model's side of PostgreSQL's answers: [`SessionState::on_backend`]
//! takes each message that changes or ends a request in flight, one handler
//! per message, and returns the outcome records it ends. Names change here
//! and only here (see [`super`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Desync, Inner, Portal, Run, SessionState, Statement, Step};
use crate::audit::Event;
use crate::classify::SessionEffect;
use crate::protocol::{ErrorFields, Frame};

impl SessionState {
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
            b'C' => self.on_complete(g, frame, &mut out)?,
            b'I' | b's' => {
                if matches!(g.queue.front(), Some(Step::Execute { .. }))
                    && let Some(Step::Execute { run, .. }) = g.pop_front()
                {
                    out.push(self.outcome(run, "ok", vec![], None));
                }
            }
            b'E' => self.on_error(g, frame, &mut out),
            b'Z' => self.on_ready(g, frame, &mut out)?,
            _ => {}
        }
        Ok(out)
    }

    /// `CommandComplete`: a statement of the request in front is done, and
    /// what it does to the session's names applies now.
    fn on_complete(
        &self,
        g: &mut Inner,
        frame: &Frame,
        out: &mut Vec<Event>,
    ) -> Result<(), Desync> {
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
        Ok(())
    }

    /// `ErrorResponse`: the request in front failed; in the extended
    /// protocol PostgreSQL skips what follows until `Sync`.
    fn on_error(&self, g: &mut Inner, frame: &Frame, out: &mut Vec<Event>) {
        let code = ErrorFields::decode(&frame.bytes).and_then(|f| f.code().map(str::to_owned));
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

    /// `ReadyForQuery`: everything up to the `Sync` or `Query` it answers
    /// is over (what PostgreSQL skipped included), and the transaction
    /// status is known again.
    fn on_ready(&self, g: &mut Inner, frame: &Frame, out: &mut Vec<Event>) -> Result<(), Desync> {
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
        Ok(())
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
