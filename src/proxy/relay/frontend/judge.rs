//! The inspection step of `Query` and `Parse`: statement text is judged by
//! the inspector against the session model (what `EXECUTE`, `FETCH` and
//! `MOVE` name, as PostgreSQL will see it), counted, and turned into what
//! the model keeps of it ([`effects`], [`gate`]).

use std::borrow::Cow;
use std::sync::Arc;

use tracing::{info, info_span};

use super::{audit_unhealthy, invalid_utf8, statement_text};
use crate::classify::{Class, SessionEffect};
use crate::metrics::Metrics;
use crate::policy::PreparedClasses;
use crate::policy::inspect::{Decision, Defines, Inspection, Origin, SessionInfo};
use crate::protocol::PgError;
use crate::proxy::Shared;
use crate::proxy::relay::Ctx;
use crate::proxy::state::{Effect, Gate, Lookup, SessionState, Statement};
use crate::proxy::trail::Trail;

/// Where `EXECUTE name` inside a statement finds `name`'s class: the
/// session model, as PostgreSQL will see it. A name whose state is not yet
/// answered is noted, so the statement waits and is judged again.
struct ModelClasses<'a> {
    model: &'a SessionState,
    unsettled: std::cell::Cell<bool>,
    /// The statements found, by name: what an `EXECUTE` runs.
    found: std::cell::RefCell<Vec<(String, Arc<Statement>)>>,
}

impl PreparedClasses for ModelClasses<'_> {
    fn class_of(&self, name: &str) -> Option<Class> {
        match self.model.statement(name) {
            Lookup::Found(s) => {
                let class = s.class.unwrap_or(Class::Unknown);
                self.found.borrow_mut().push((name.to_owned(), s));
                Some(class)
            }
            Lookup::Missing => None,
            Lookup::Unsettled => {
                self.unsettled.set(true);
                Some(Class::Unknown)
            }
            Lookup::Skipped => Some(Class::Unknown),
        }
    }
}

/// The statement text of a `Query` or `Parse` and the judgement of it.
pub(super) struct Judged<'a> {
    /// The text as logged (lossy when it is not valid UTF-8).
    pub(super) logged: Cow<'a, str>,
    pub(super) inspection: Inspection,
    /// The prepared statements its `EXECUTE`s run, by name.
    pub(super) executes: Vec<(String, Arc<Statement>)>,
}

impl Judged<'_> {
    /// Record the statement with the decision made (moving rule and tables
    /// into the record); returns its number.
    pub(super) fn record(&mut self, trail: &mut Trail, via: &'static str) -> u64 {
        trail.statement(via, &self.logged, &mut self.inspection)
    }
}

/// Judge statement text; `None` when a name it runs is not settled yet.
pub(super) fn judge<'a>(
    raw: &'a [u8],
    name_ok: bool,
    origin: Origin<'_>,
    ctx: &Ctx<'_>,
    model: &SessionState,
) -> Option<Judged<'a>> {
    let text = match statement_text(raw) {
        Ok(sql) if name_ok => Ok(sql),
        Ok(_) => Err(invalid_utf8()),
        Err(e) => Err(e),
    };
    let mut executes = Vec::new();
    let inspection = match &text {
        // Fail closed: nothing runs that the log cannot record.
        Ok(_) if !ctx.shared.audit.healthy() => {
            counted(ctx.shared, Decision::Deny(audit_unhealthy()))
        }
        Ok(sql) => {
            let classes = ModelClasses {
                model,
                unsettled: std::cell::Cell::new(false),
                found: Default::default(),
            };
            let mut inspection = decide(ctx.shared, ctx.info, &classes, sql, origin);
            if classes.unsettled.get() {
                return None;
            }
            // The control database cannot take records: only what may run
            // before its record is durable (a read) goes on.
            if ctx.shared.audit.waiting()
                && inspection.class != Some(Class::Read)
                && !matches!(inspection.decision, Decision::Deny(_))
            {
                inspection.decision = Decision::Deny(PgError::audit_waiting());
            }
            executes = classes.found.into_inner();
            inspection
        }
        Err(e) => counted(ctx.shared, Decision::Deny(e.clone())),
    };
    let logged = match text {
        Ok(sql) => Cow::Borrowed(sql),
        Err(_) => String::from_utf8_lossy(raw),
    };
    let mut j = Judged {
        logged,
        inspection,
        executes,
    };
    // FETCH and MOVE run a portal: one bound through the protocol from a
    // statement that is not a read runs only by Execute, where it is
    // recorded (and approved).
    for d in &j.inspection.effects {
        let SessionEffect::Fetch { name, forward } = &d.what else {
            continue;
        };
        match fetch_allowed(model, name, *forward) {
            None => return None,
            Some(Ok(())) => {}
            Some(Err(e)) => j.inspection.decision = Decision::Deny(e),
        }
    }
    Some(j)
}

/// A prepared statement judged again under the policies in force (they
/// were reloaded since its `Parse`): what a `Parse` of it now would make
/// of it. `None` when a name it runs is not settled yet.
pub(super) fn rejudge(
    ctx: &Ctx<'_>,
    model: &SessionState,
    name: &str,
    old: &Statement,
    generation: u64,
) -> Option<(Arc<Statement>, Inspection)> {
    let classes = ModelClasses {
        model,
        unsettled: std::cell::Cell::new(false),
        found: Default::default(),
    };
    let origin = Origin::Parse { statement: name };
    let mut inspection = decide(ctx.shared, ctx.info, &classes, &old.text, origin);
    if classes.unsettled.get() {
        return None;
    }
    let class = inspection.class.unwrap_or(Class::Unknown);
    let statement = Arc::new(Statement {
        text: old.text.clone(),
        record: old.record,
        class: Some(class),
        gate: gate(class, inspection.decision.clone()),
        effect: old.effect.clone(),
        param_types: old.param_types.clone(),
        rollback_undoes: inspection.rollback_undoes,
        row_check: inspection.row_check.take(),
        generation,
    });
    Some((statement, inspection))
}

/// Whether FETCH / MOVE may run `portal` (`None`: not settled yet). A
/// portal bound through the protocol from a statement that is not a read
/// runs only by Execute, where it is recorded (and approved); a SQL cursor
/// that is not a plain read only onward, as rewinding runs its query again.
pub(super) fn fetch_allowed(
    model: &SessionState,
    portal: &str,
    forward: bool,
) -> Option<Result<(), PgError>> {
    let refuse = |why: &str| Some(Err(PgError::fetch_refused(portal, why)));
    match model.portal(portal) {
        Lookup::Unsettled => None,
        Lookup::Found(p) if matches!(p.statement.gate, Gate::Free) => Some(Ok(())),
        Lookup::Found(p) if p.bound => {
            refuse("would run a statement that changes data; Execute the portal instead")
        }
        Lookup::Found(_) if !forward => {
            refuse("backwards would run the cursor's query again, which is not a plain read")
        }
        _ => Some(Ok(())),
    }
}

/// The model's view of what a string's statements define; `text` gives
/// the string (only asked for when a statement defines something).
pub(super) fn effects(
    defines: Vec<Defines>,
    text: impl Fn() -> Arc<str>,
    record: u64,
) -> Vec<Effect> {
    defines
        .into_iter()
        .map(|d| {
            let gate = gate(d.class, d.decision);
            let statement = match &d.what {
                SessionEffect::Prepare(_) => Some(gate),
                // A SQL cursor is read with FETCH; through the protocol it
                // runs only if it is a plain read.
                SessionEffect::Declare { .. } => Some(match gate {
                    Gate::Free => Gate::Free,
                    _ => Gate::Refused,
                }),
                _ => None,
            }
            .map(|gate| Statement::new(text(), record, Some(d.class), gate));
            Effect {
                what: d.what,
                statement,
            }
        })
        .collect()
}

/// What executing a statement of this class needs, as the policy decided.
pub(super) fn gate(class: Class, decision: Decision) -> Gate {
    match decision {
        Decision::Allow if class == Class::Read => Gate::Free,
        Decision::Allow => Gate::Recorded,
        Decision::Hold(h) => Gate::Approval(h),
        Decision::Deny(_) => Gate::Refused,
    }
}

/// Ask the inspector, inside a per-statement span, and count the decision.
fn decide(
    shared: &Shared,
    info: &SessionInfo,
    prepared: &dyn PreparedClasses,
    sql: &str,
    origin: Origin<'_>,
) -> Inspection {
    let span = info_span!("statement", origin = ?origin);
    let _g = span.enter();
    let inspection = shared.inspector.inspect(info, prepared, sql, origin);
    // A simple query that is planned first is judged again with the
    // planner's answer: counted then, once.
    if inspection.row_check.is_none() || origin != Origin::SimpleQuery {
        count(shared, &inspection);
    }
    inspection
}

/// Count (and log) a decision made.
pub(super) fn count(shared: &Shared, inspection: &Inspection) {
    let outcome = match &inspection.decision {
        Decision::Allow => Metrics::ALLOW,
        Decision::Deny(e) => {
            info!(reason = %e.message, "statement denied");
            Metrics::DENY
        }
        Decision::Hold(h) => {
            info!(reason = %h.reason, rule = %h.rule, "statement needs approval");
            Metrics::HOLD
        }
    };
    shared.metrics.statement(inspection.class, outcome);
}

/// Count a refusal made before the inspector saw the statement.
fn counted(shared: &Shared, d: Decision) -> Inspection {
    shared.metrics.statement(None, Metrics::DENY);
    d.into()
}
