//! `Bind`: the decision point for a held statement (each `Bind` of it asks
//! for approval, for the parameter values it carries); other statements
//! are bound as their `Parse` decided.

use bytes::BytesMut;
use pgwire::messages::extendedquery::Bind;

use super::judge::rejudge;
use super::{
    AfterHold, EstimateMessage, Flow, Frontend, HeldMessage, audit_unhealthy, bad_message, forward,
    invalid_utf8, not_running, refused, too_many_names,
};
use crate::policy::inspect::{Decision, Inspection};
use crate::policy::limits::RowCheck;
use crate::protocol::{Frame, PgError};
use crate::proxy::estimate::Sized;
use crate::proxy::relay::denials::Carrier;
use crate::proxy::relay::{Ctx, RelayEnd};
use crate::proxy::state::{Gate, Lookup, SessionState, Statement};
use std::sync::Arc;

pub(super) fn on_bind(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let Some((portal, name)) = bind_names(frame.body()) else {
        return Err(bad_message("Bind"));
    };
    let (Ok(portal), Ok(name)) = (std::str::from_utf8(portal), std::str::from_utf8(name)) else {
        state.model.bind("", refused(), None);
        ctx.denials
            .refuse(out, Carrier::Bind { portal: "".into() }, invalid_utf8())?;
        return Ok(Flow::Continue);
    };
    let refuse = |out: &mut BytesMut, model: &SessionState, e: PgError| {
        model.bind(portal, refused(), None);
        ctx.denials.refuse(
            out,
            Carrier::Bind {
                portal: portal.into(),
            },
            e,
        )?;
        Ok(Flow::Continue)
    };
    if state.model.oversized() {
        return refuse(out, state.model, too_many_names());
    }
    let statement = match state.model.statement(name) {
        Lookup::Unsettled => return Ok(Flow::Stall(frame)),
        // PostgreSQL skips it; the model does too.
        // PostgreSQL will not run it; neither is it forwarded, in case the
        // model is wrong about that.
        Lookup::Skipped => return refuse(out, state.model, not_running()),
        Lookup::Missing => {
            let e = PgError::statement_missing(name);
            return refuse(out, state.model, e);
        }
        Lookup::Found(s) => s,
    };
    let statement = match current(statement, name, ctx, state) {
        Current::Statement(s) => s,
        Current::Unsettled => return Ok(Flow::Stall(frame)),
        Current::Denied(e) => return refuse(out, state.model, e),
    };
    // A limited role's write is planned with these values first; over a
    // limit, the decision is the one for `destructive`.
    if let Some(check) = &statement.row_check
        && !matches!(statement.gate, Gate::Refused)
    {
        match state.sized_for(&frame) {
            None => return plan_first(frame, check, &statement),
            Some(Sized::Within(_)) => {}
            Some(Sized::Over(why)) => {
                let mut inspection = Inspection {
                    tables: check.tables().to_vec(),
                    ..Decision::Allow.into()
                };
                check.apply_over(&why, &mut inspection);
                match std::mem::replace(&mut inspection.decision, Decision::Allow) {
                    Decision::Deny(e) => {
                        inspection.decision = Decision::Deny(e.clone());
                        state
                            .trail
                            .statement("bind", &statement.text, &mut inspection);
                        return refuse(out, state.model, e);
                    }
                    Decision::Hold(_) if !ctx.shared.audit.healthy() => {
                        return refuse(out, state.model, audit_unhealthy());
                    }
                    Decision::Hold(held) => {
                        return Ok(Flow::Hold(Box::new(HeldMessage {
                            held,
                            sql: statement.text.clone(),
                            param_types: statement.param_types.clone(),
                            then: AfterHold::Bind {
                                portal: portal.to_owned(),
                                statement: statement.clone(),
                            },
                            frame,
                        })));
                    }
                    Decision::Allow => {}
                }
            }
        }
    }
    match &statement.gate {
        Gate::Free | Gate::Recorded => {
            state.model.bind(portal, statement.clone(), None);
            forward(out, &frame)
        }
        Gate::Refused => {
            let e = PgError::refused_when_prepared();
            refuse(out, state.model, e)
        }
        Gate::Approval(_) if !ctx.shared.audit.healthy() => {
            refuse(out, state.model, audit_unhealthy())
        }
        Gate::Approval(held) => Ok(Flow::Hold(Box::new(HeldMessage {
            held: held.clone(),
            sql: statement.text.clone(),
            param_types: statement.param_types.clone(),
            then: AfterHold::Bind {
                portal: portal.to_owned(),
                statement: statement.clone(),
            },
            frame,
        }))),
    }
}

/// A prepared statement as the policies in force judge it.
enum Current {
    Statement(Arc<Statement>),
    /// A name it runs is not settled yet: handle the Bind again later.
    Unsettled,
    Denied(PgError),
}

/// The statement itself, unless policies were reloaded since its Parse:
/// then what they say now, for this and every later Bind of it (a denial
/// is recorded).
fn current(
    statement: Arc<Statement>,
    name: &str,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Current {
    let now = ctx
        .shared
        .policy_generation
        .load(std::sync::atomic::Ordering::Acquire);
    if statement.generation == now || matches!(statement.gate, Gate::Refused) {
        return Current::Statement(statement);
    }
    let Some((fresh, mut inspection)) = rejudge(ctx, state.model, name, &statement, now) else {
        return Current::Unsettled;
    };
    if let Decision::Deny(e) = &inspection.decision {
        let e = e.clone();
        state.trail.statement("bind", &fresh.text, &mut inspection);
        return Current::Denied(e);
    }
    state.model.rejudged(name, fresh.clone());
    Current::Statement(fresh)
}

/// Plan the bound statement first, with the values this `Bind` carries.
fn plan_first(
    frame: Frame,
    check: &Arc<RowCheck>,
    statement: &Statement,
) -> Result<Flow, RelayEnd> {
    let Some(b) = decode_bind(&frame) else {
        return Err(bad_message("Bind"));
    };
    let params = bind_values(&b)
        .into_iter()
        .map(|(binary, v)| (binary, v.map(bytes::Bytes::copy_from_slice)))
        .collect();
    Ok(Flow::Estimate(Box::new(EstimateMessage {
        check: check.clone(),
        types: statement.param_types.clone(),
        params,
        frame,
    })))
}

/// The portal and statement names of a `Bind` body; `None` when it is
/// malformed. Values are left to PostgreSQL, except for a held statement.
fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let portal_end = body.iter().position(|&b| b == 0)?;
    let rest = &body[portal_end + 1..];
    let stmt_end = rest.iter().position(|&b| b == 0)?;
    Some((&body[..portal_end], &rest[..stmt_end]))
}

/// A whole `Bind`, decoded by pgwire.
pub(super) fn decode_bind(frame: &Frame) -> Option<Bind> {
    use pgwire::messages::{DecodeContext, Message};
    let mut bytes = frame.bytes.clone();
    Bind::decode(&mut bytes, &DecodeContext::default())
        .ok()
        .flatten()
}

/// Each parameter value with its format (`true`: binary): one format code
/// for all, or one per value.
pub(super) fn bind_values(b: &Bind) -> Vec<(bool, Option<&[u8]>)> {
    let f = &b.parameter_format_codes;
    b.parameters
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let code = if f.len() == 1 {
                f[0]
            } else {
                f.get(i).copied().unwrap_or(0)
            };
            (code == 1, v.as_deref())
        })
        .collect()
}
