//! `Execute`: a portal runs as its statement's gate allows; a statement
//! that is not a read is recorded at each execution (durably, when it
//! must be) before it goes upstream, and an approved portal runs once.

use bytes::BytesMut;

use super::judge::fetch_allowed;
use super::{Flow, Frontend, audit_unhealthy, bad_message, forward, invalid_utf8, not_running};
use crate::classify::SessionEffect;
use crate::protocol::{Frame, PgError};
use crate::proxy::relay::denials::Carrier;
use crate::proxy::relay::{Ctx, RelayEnd};
use crate::proxy::state::{Effect, Gate, Lookup, SessionState};

pub(super) fn on_execute(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let body = frame.body();
    let Some(end) = body.iter().position(|&b| b == 0) else {
        return Err(bad_message("Execute"));
    };
    let refuse = |out: &mut BytesMut, model: &SessionState, e: PgError| {
        model.execute(0, None, None);
        ctx.denials.refuse(out, Carrier::Execute, e)?;
        Ok(Flow::Continue)
    };
    let Ok(name) = std::str::from_utf8(&body[..end]) else {
        return refuse(out, state.model, invalid_utf8());
    };
    let portal = match state.model.portal(name) {
        Lookup::Unsettled => return Ok(Flow::Stall(frame)),
        Lookup::Skipped => return refuse(out, state.model, not_running()),
        Lookup::Missing => {
            let e = PgError::portal_missing(name);
            return refuse(out, state.model, e);
        }
        Lookup::Found(p) => p,
    };
    let statement = &portal.statement;
    // A prepared FETCH or MOVE runs the portal it names, as it is now.
    if let Some(Effect {
        what: SessionEffect::Fetch {
            name: target,
            forward,
        },
        ..
    }) = &statement.effect
    {
        match fetch_allowed(state.model, target, *forward) {
            None => return Ok(Flow::Stall(frame)),
            Some(Err(e)) => return refuse(out, state.model, e),
            Some(Ok(())) => {}
        }
    }
    match &statement.gate {
        Gate::Free => state.trail.execute_read(&statement.text),
        Gate::Refused => {
            let e = PgError::portal_not_run_through_protocol(name);
            return refuse(out, state.model, e);
        }
        Gate::Approval(_) if portal.approval.is_none() => {
            let e = PgError::portal_bound_without_approval();
            return refuse(out, state.model, e);
        }
        Gate::Recorded | Gate::Approval(_) => {
            // Before the run is taken: a refusal must not use up an approval.
            if !ctx.shared.audit.healthy() {
                return refuse(out, state.model, audit_unhealthy());
            }
            // Its record must be durable first, and cannot be now.
            if ctx.shared.audit.waiting() {
                return refuse(out, state.model, PgError::audit_waiting());
            }
            if !portal.take_run() {
                let e = PgError::approval_spent();
                return refuse(out, state.model, e);
            }
            // Recorded whatever name it was prepared or bound under; durable
            // before it goes upstream, or (inside a block) before what
            // commits it.
            state.trail.execute(
                (
                    statement.record,
                    statement.class,
                    &statement.text,
                    statement.rollback_undoes,
                ),
                name,
                portal.approval.is_some(),
            );
        }
    }
    state.model.execute(
        statement.record,
        statement.effect.clone(),
        portal.approval.clone(),
    );
    forward(out, &frame)
}
