//! Client → upstream: every frame the client sends is handled by the step
//! its message names, in order, and what may go upstream is queued.
//!
//! The loop ([`client_to_upstream`]) reads a frame and takes every frame
//! already buffered, so a pipeline goes upstream in one write. For each:
//! 1. [`handle_client_frame`] dispatches by message: `Query`
//!    ([`query`]), `Parse` ([`parse`]), `Bind` ([`bind`]), `Execute`
//!    ([`execute`]); `Close`, `Describe`, `Sync`, the end of COPY and the
//!    refused `FunctionCall` ([`control`]). Each tells the session model
//!    what it forwards and the [`Trail`] what it records.
//! 2. A step may stall (a name it needs is not settled: [`settle`]), or
//!    hold the message for approval ([`release`]).
//! 3. [`send`] hands the pending records to the log, waiting for those
//!    that must be durable first, and only then writes what is queued:
//!    no statement goes upstream before it is recorded.

mod bind;
mod control;
mod execute;
mod judge;
mod parse;
mod query;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;

use self::bind::{bind_values, decode_bind, on_bind};
use self::control::{on_close, on_copy_end, on_describe, on_function_call, on_sync};
use self::execute::on_execute;
use self::parse::on_parse;
use self::query::on_query;
use super::denials::Carrier;
use super::{Ctx, FLUSH_AT, RelayEnd};
use crate::metrics::Metrics;
use crate::net::stream::Stream;
use crate::policy::inspect::Held;
use crate::policy::limits::RowCheck;
use crate::protocol::frame::FrameError;
use crate::protocol::{Frame, FrameReader, PgError};
use crate::proxy::Shared;
use crate::proxy::estimate::Sized;
use crate::proxy::hold::{self, Outcome};
use crate::proxy::state::{Effect, Gate, SessionState, Statement};
use crate::proxy::trail::Trail;
use crate::upstream::Param;

/// Bytes of a `Query` or `Parse` statement, as UTF-8. Read from the raw
/// frame, not via pgwire's decoder, which replaces invalid bytes: the
/// inspector must see exactly what PostgreSQL would.
fn statement_text(bytes: &[u8]) -> Result<&str, PgError> {
    // PostgreSQL stops reading a statement at its first zero byte and then
    // rejects the message; refuse it here so the inspector never judges
    // text PostgreSQL would read differently.
    if bytes.contains(&0) {
        return Err(PgError::zero_byte_in_statement());
    }
    std::str::from_utf8(bytes).map_err(|_| invalid_utf8())
}

fn invalid_utf8() -> PgError {
    PgError::invalid_utf8_statement()
}

/// What the frontend keeps between frames.
struct Frontend<'a> {
    trail: Trail,
    model: &'a SessionState,
    /// The planner's answer for the frame about to be handled again (see
    /// [`Flow::Estimate`]), with that frame's bytes.
    sized: Option<(BytesMut, Sized)>,
}

impl Frontend<'_> {
    /// The row estimate made for `frame`, if one was.
    fn sized_for(&mut self, frame: &Frame) -> Option<Sized> {
        match self.sized.take() {
            Some((bytes, sized)) if bytes == frame.bytes => Some(sized),
            _ => None,
        }
    }
}

/// What to do after one client frame.
enum Flow {
    Continue,
    /// `Terminate`: forward what is queued and stop.
    Terminate,
    /// The policy holds this statement: ask for approval first.
    Hold(Box<HeldMessage>),
    /// The message names a statement or portal that a change PostgreSQL
    /// has not answered yet may have changed: wait for the answer, then
    /// handle the message again.
    Stall(Frame),
    /// The role limits how many rows a write may change: plan it on a
    /// side connection, then handle the message again with the answer.
    Estimate(Box<EstimateMessage>),
}

struct EstimateMessage {
    frame: Frame,
    check: Arc<RowCheck>,
    /// For a Bind: the statement's parameter types and the values bound.
    types: Vec<u32>,
    params: Vec<Param>,
}

struct HeldMessage {
    frame: Frame,
    held: Box<Held>,
    /// The text approvers see and the approval is bound to.
    sql: Arc<str>,
    /// For a Bind: the statement's parameter types (also bound).
    param_types: Vec<u32>,
    then: AfterHold,
}

/// What the held message does once it may run (or is refused).
enum AfterHold {
    Query {
        record: u64,
        effects: Vec<Effect>,
    },
    Bind {
        portal: String,
        statement: Arc<Statement>,
    },
}

/// The session ends rather than forward anything unaudited.
fn audit_failed(e: crate::audit::AuditError) -> RelayEnd {
    RelayEnd::Fatal(PgError::audit_write_failed(e))
}

fn audit_unhealthy() -> PgError {
    PgError::audit_unhealthy()
}

pub(super) async fn client_to_upstream(
    client: &mut FrameReader<ReadHalf<Stream>>,
    up: &mut WriteHalf<Stream>,
    ctx: &Ctx<'_>,
    model: &SessionState,
    cancel: &Notify,
) -> RelayEnd {
    let shared = ctx.shared;
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut state = Frontend {
        trail: Trail::new(ctx.info),
        model,
        sized: None,
    };
    let protocol_error = |e: &FrameError| {
        Metrics::inc(&shared.metrics.protocol_errors_total);
        RelayEnd::Fatal(e.to_client_error())
    };
    loop {
        let frame = match client.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return RelayEnd::ClientClosed,
            Err(FrameError::Io(e)) => return RelayEnd::Io(e),
            Err(e) => return protocol_error(&e),
        };
        let mut next = Some(frame);
        // Take every frame already buffered, so a pipeline goes upstream in
        // one write.
        while let Some(frame) = next.take() {
            let flow = match handle_client_frame(frame, &mut out, ctx, &mut state) {
                Ok(flow) => flow,
                Err(end) => return end,
            };
            match flow {
                Flow::Continue => {}
                Flow::Terminate => {
                    if let Err(e) = state.trail.commit(&shared.audit).await {
                        return audit_failed(e);
                    }
                    let _ = up.write_all(&out).await;
                    return RelayEnd::ClientTerminated;
                }
                Flow::Stall(frame) => {
                    // Send what came before, let PostgreSQL answer it, then
                    // decide this message against what really exists.
                    if let Err(end) = send(&mut state, &mut out, up, shared).await {
                        return end;
                    }
                    if let Err(end) = settle(model, client, shared).await {
                        return end;
                    }
                    next = Some(frame);
                    continue;
                }
                Flow::Estimate(m) => {
                    // What came before runs, and PostgreSQL answers it,
                    // first: the plan is of the database (and under the
                    // settings) this statement will find.
                    if let Err(end) = send(&mut state, &mut out, up, shared).await {
                        return end;
                    }
                    if let Err(end) = settle(model, client, shared).await {
                        return end;
                    }
                    let sized = shared
                        .planner
                        .size(
                            &shared.upstream,
                            &ctx.info.database,
                            &m.check,
                            (&m.types, &m.params),
                            model.settings.snapshot(),
                        )
                        .await;
                    state.sized = Some((m.frame.bytes.clone(), sized));
                    next = Some(m.frame);
                    continue;
                }
                Flow::Hold(m) => {
                    // What came before the held statement runs now; the
                    // rest of the pipeline waits behind it, in order.
                    if let Err(end) = send(&mut state, &mut out, up, shared).await {
                        return end;
                    }
                    if let Err(end) = release(*m, &mut out, ctx, &mut state, client, cancel).await {
                        return end;
                    }
                }
            }
            if out.len() < FLUSH_AT {
                next = match client.try_frame() {
                    Ok(f) => f,
                    Err(e) => return protocol_error(&e),
                };
            }
        }
        // Records of data-changing statements are durable before the
        // statements go upstream (one wait for the whole batch).
        if let Err(end) = send(&mut state, &mut out, up, shared).await {
            return end;
        }
    }
}

/// Make pending records durable (as needed), then send what is queued.
async fn send(
    state: &mut Frontend<'_>,
    out: &mut BytesMut,
    up: &mut WriteHalf<Stream>,
    shared: &Shared,
) -> Result<(), RelayEnd> {
    if let Err(e) = state.trail.commit(&shared.audit).await {
        return Err(audit_failed(e));
    }
    if !out.is_empty() {
        up.write_all(out).await.map_err(RelayEnd::Io)?;
        out.clear();
    }
    Ok(())
}

/// Wait until PostgreSQL has answered everything sent, reading ahead from
/// the client only to notice it leaving.
async fn settle(
    model: &SessionState,
    client: &mut FrameReader<ReadHalf<Stream>>,
    shared: &Shared,
) -> Result<(), RelayEnd> {
    let settled = model.settled();
    tokio::pin!(settled);
    loop {
        tokio::select! {
            _ = &mut settled => return Ok(()),
            more = client.fill() => match more {
                // A client that sends this much while its own answers are
                // pending is not waiting for them: end the session rather
                // than stop noticing it.
                Ok(true) if client.buffered() >= shared.limits.max_message_bytes => {
                    return Err(RelayEnd::Fatal(PgError::sent_too_much_while_waiting()));
                }
                Ok(true) => {}
                Ok(false) | Err(_) => return Err(RelayEnd::ClientClosed),
            },
        }
    }
}

/// Ask for approval of a held message, then forward or refuse it.
async fn release(
    m: HeldMessage,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
    client: &mut FrameReader<ReadHalf<Stream>>,
    cancel: &Notify,
) -> Result<(), RelayEnd> {
    // The values a held Bind runs with are part of what is approved; a
    // Bind whose values cannot be read is refused.
    let bind = match &m.then {
        AfterHold::Bind { .. } => match decode_bind(&m.frame) {
            Some(b) => Some(b),
            None => return Err(bad_message("Bind")),
        },
        AfterHold::Query { .. } => None,
    };
    let values = bind.as_ref().map(bind_values).unwrap_or_default();
    let asked = hold::Asked {
        sql: &m.sql,
        types: &m.param_types,
        values: &values,
    };
    let outcome = hold::hold(ctx.shared, ctx.info, &m.held, &asked, client, cancel).await;
    match (outcome, m.then) {
        (Outcome::ClientGone, _) => return Err(RelayEnd::ClientClosed),
        (Outcome::Run(approval), AfterHold::Query { record, effects }) => {
            state.model.query(record, effects, Some(approval));
            out.extend_from_slice(&m.frame.bytes);
        }
        (Outcome::Run(approval), AfterHold::Bind { portal, statement }) => {
            state.model.bind(&portal, statement, Some(approval));
            out.extend_from_slice(&m.frame.bytes);
        }
        (Outcome::Refuse(e), AfterHold::Query { record, .. }) => {
            state.model.query(record, Vec::new(), None);
            ctx.denials.refuse(out, Carrier::Query, e)?;
        }
        (Outcome::Refuse(e), AfterHold::Bind { portal, .. }) => {
            state.model.bind(&portal, refused(), None);
            ctx.denials.refuse(
                out,
                Carrier::Bind {
                    portal: portal.into(),
                },
                e,
            )?;
        }
    }
    Ok(())
}

/// For a message PostgreSQL would not run either (it is skipping until
/// Sync, or reading COPY data): only seen if the model were wrong.
fn not_running() -> PgError {
    PgError::not_running_until_sync()
}

/// The session model would grow past [`crate::proxy::state::MAX_NAMES`].
fn too_many_names() -> PgError {
    PgError::too_many_names(crate::proxy::state::MAX_NAMES)
}

/// Stands in for a statement that was refused: its message fails upstream.
fn refused() -> Arc<Statement> {
    Statement::new(Arc::from(""), 0, None, Gate::Refused)
}

/// Inspect one client frame and queue what goes upstream.
fn handle_client_frame(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    // What PostgreSQL last said of the transaction, while nothing is in
    // flight (a Bind after an answered BEGIN knows the block is open).
    if matches!(frame.tag(), b'Q' | b'P' | b'B' | b'E' | b'S') {
        state.trail.observe(state.model.idle_status());
    }
    match frame.tag() {
        b'Q' => on_query(frame, out, ctx, state),
        b'P' => on_parse(frame, out, ctx, state),
        b'B' => on_bind(frame, out, ctx, state),
        b'E' => on_execute(frame, out, ctx, state),
        b'C' => on_close(frame, out, state),
        b'D' => on_describe(frame, out, state),
        b'S' => on_sync(frame, out, state),
        // PostgreSQL ignores a Sync during COPY: the model must know
        // where the COPY ends.
        b'c' | b'f' => on_copy_end(frame, out, state),
        // Flush and COPY data carry no statement: forwarded.
        b'H' | b'd' => forward(out, &frame),
        b'F' => on_function_call(out, ctx, state),
        b'X' => {
            out.extend_from_slice(&frame.bytes);
            Ok(Flow::Terminate)
        }
        t => {
            Metrics::inc(&ctx.shared.metrics.protocol_errors_total);
            Err(RelayEnd::Fatal(PgError::protocol_violation(format!(
                "invalid frontend message type {t}"
            ))))
        }
    }
}

fn forward(out: &mut BytesMut, frame: &Frame) -> Result<Flow, RelayEnd> {
    out.extend_from_slice(&frame.bytes);
    Ok(Flow::Continue)
}

fn bad_message(what: &str) -> RelayEnd {
    RelayEnd::Fatal(PgError::protocol_violation(format!(
        "invalid {what} message format"
    )))
}
