//! The messages that carry no statement text: `Close`, `Describe`,
//! `Sync`, the end of COPY, which the session model must see to stay in
//! step with PostgreSQL, and `FunctionCall`, which is always refused.

use bytes::BytesMut;

use super::{Flow, Frontend, bad_message, forward};
use crate::metrics::Metrics;
use crate::policy::inspect::{Decision, Inspection};
use crate::protocol::{Frame, PgError};
use crate::proxy::relay::denials::Carrier;
use crate::proxy::relay::{Ctx, RelayEnd};

pub(super) fn on_close(
    frame: Frame,
    out: &mut BytesMut,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    // Applied to the model when PostgreSQL answers CloseComplete.
    match frame.body() {
        [kind, name @ .., 0] => {
            let name = String::from_utf8_lossy(name);
            state.model.close(*kind == b'P', &name);
        }
        _ => return Err(bad_message("Close")),
    }
    forward(out, &frame)
}

pub(super) fn on_describe(
    frame: Frame,
    out: &mut BytesMut,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    state.model.describe();
    forward(out, &frame)
}

pub(super) fn on_sync(
    frame: Frame,
    out: &mut BytesMut,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    state.model.sync();
    state.trail.sync();
    forward(out, &frame)
}

/// `CopyDone` or `CopyFail`.
pub(super) fn on_copy_end(
    frame: Frame,
    out: &mut BytesMut,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    state.model.copy_end();
    forward(out, &frame)
}

pub(super) fn on_function_call(
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    // The function is named by OID and its arguments are opaque:
    // nothing to inspect, so it never runs.
    ctx.shared.metrics.statement(None, Metrics::DENY);
    let e = PgError::function_call_unsupported();
    let n = state.trail.statement(
        "function-call",
        "<FunctionCall message>",
        &mut Inspection {
            rule: Some("protocol.function_call".to_owned()),
            ..Decision::Deny(e.clone()).into()
        },
    );
    state.model.query(n, Vec::new(), None);
    ctx.denials.refuse(out, Carrier::Query, e)?;
    Ok(Flow::Continue)
}
