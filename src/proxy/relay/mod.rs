//! The message relay between an authenticated client and its upstream
//! connection.
//!
//! Two directions run concurrently in one task:
//! - **client → upstream** reads whole frames, hands every `Query` and `Parse`
//!   to the inspector, and forwards the bytes it was given. `FunctionCall` is
//!   refused (it names a function by OID, so nothing can be inspected).
//! - **upstream → client** forwards frames as PostgreSQL sent them; rows and
//!   COPY data are never decoded.
//!
//! A refused statement is *replaced*, not dropped: the upstream receives a
//! statement that fails to parse and carries a per-denial marker. PostgreSQL
//! then does exactly what it does for any failed statement — rolls back an
//! implicit transaction, marks an explicit one failed, skips the rest of an
//! extended-protocol batch up to `Sync` and answers `ReadyForQuery` with the
//! true status — and the upstream → client direction swaps the marked error
//! for the firewall's own. Responses stay in order in every pipeline shape,
//! and client and server never disagree about transaction state.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::extendedquery::{Bind, Execute, Parse};
use pgwire::messages::simplequery::Query;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, info_span, warn};

use super::Shared;
use super::hold::{self, Outcome};
use super::registry::Control;
use super::state::{Desync, Effect, Gate, Lookup, SessionState, Statement};
use super::trail::{Decided, Trail};
use crate::audit::Event;
use crate::classify::{Class, SessionEffect};
use crate::metrics::Metrics;
use crate::net::stream::Stream;
use crate::policy::PreparedClasses;
use crate::policy::inspect::{Decision, Defines, Held, Inspection, Origin, SessionInfo};
use crate::protocol::frame::FrameError;
use crate::protocol::{self, ErrorFields, Frame, FrameReader, PgError, sqlstate};
use crate::shutdown::{Phase, Shutdown};
use crate::upstream::{MAX_BACKEND_MESSAGE, Upstream};

/// Write to the peer once this much is queued, even if more frames are ready.
const FLUSH_AT: usize = 256 * 1024;
/// Pending denials kept at most; older ones can no longer be answered.
const MAX_PENDING_DENIALS: usize = 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    ClientTerminated,
    ClientClosed,
    UpstreamClosed,
    /// The session was ended with this FATAL error (already sent when possible).
    Fatal(PgError),
    Io(std::io::Error),
}

/// Refused statements sent upstream as marked failures, whose error has not
/// come back yet.
struct Denials {
    /// Random per session, so a client cannot forge one to make its own
    /// error look like something else.
    marker: String,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    queue: VecDeque<(u64, PgError)>,
}

/// Which message a refused statement came in, so its replacement has the
/// same shape.
enum Carrier<'a> {
    Query,
    Parse {
        name: Cow<'a, str>,
    },
    /// A refused `Bind`.
    Bind {
        portal: Cow<'a, str>,
    },
    /// A refused `Execute`.
    Execute,
}

impl Denials {
    fn new() -> Denials {
        Denials {
            marker: format!("infraveil_denied_{:016x}", rand::random::<u64>()),
            pending: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue upstream a statement that fails to parse in place of a refused
    /// one, and remember `err` for when its error comes back. The
    /// replacement is a lone identifier, which PostgreSQL's syntax error
    /// quotes back.
    fn refuse(
        &self,
        out: &mut BytesMut,
        carrier: Carrier<'_>,
        err: PgError,
    ) -> Result<(), RelayEnd> {
        let id = {
            let mut p = self.lock();
            p.next += 1;
            let id = p.next;
            if p.queue.len() >= MAX_PENDING_DENIALS {
                p.queue.pop_front();
            }
            p.queue.push_back((id, err));
            id
        };
        let text = format!("{}_{id}", self.marker);
        let put = match carrier {
            Carrier::Query => protocol::put(out, &Query::new(text)),
            // Same statement name: PostgreSQL's handling of the unnamed
            // statement depends on it.
            Carrier::Parse { name } => {
                let name = (!name.is_empty()).then(|| name.into_owned());
                protocol::put(out, &Parse::new(name, text, vec![]))
            }
            // A Bind of a statement that does not exist fails with the
            // marker in the message, like the replacements above.
            Carrier::Bind { portal } => {
                let portal = (!portal.is_empty()).then(|| portal.into_owned());
                protocol::put(out, &Bind::new(portal, Some(text), vec![], vec![], vec![]))
            }
            // So does an Execute of a portal that does not exist.
            Carrier::Execute => protocol::put(out, &Execute::new(Some(text), 0)),
        };
        put.map_err(RelayEnd::Fatal)
    }

    /// If `frame` is the upstream's error for one of our replacements, the
    /// firewall's error to send instead.
    fn take_for(&self, frame: &Frame) -> Option<PgError> {
        let mut p = self.lock();
        if p.queue.is_empty() {
            return None;
        }
        let fields = ErrorFields::decode(&frame.bytes)?;
        let code = fields.code()?;
        if code != sqlstate::SYNTAX_ERROR
            && code != sqlstate::INVALID_SQL_STATEMENT_NAME
            && code != sqlstate::INVALID_CURSOR_NAME
        {
            return None;
        }
        let msg = fields.message()?;
        // The message is upstream text and may carry anything after the
        // marker (a multibyte character included): no byte-offset slicing.
        let at = msg.find(&self.marker)?;
        let digits = msg[at..]
            .strip_prefix(self.marker.as_str())?
            .strip_prefix('_')?;
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let id: u64 = digits.get(..end)?.parse().ok()?;
        // Responses come in order: denials older than this one were skipped
        // by PostgreSQL (it was already in an error state) and never return.
        while p.queue.front().is_some_and(|(front, _)| *front < id) {
            p.queue.pop_front();
        }
        match p.queue.front() {
            Some((front, _)) if *front == id => p.queue.pop_front().map(|(_, e)| e),
            _ => None,
        }
    }
}

/// Run the relay until either side ends.
pub async fn run(
    client: FrameReader<Stream>,
    upstream: Upstream,
    info: &SessionInfo,
    shared: &Arc<Shared>,
    mut control: mpsc::Receiver<Control>,
    mut shutdown: Shutdown,
    (client_pid, cancel, model): (i32, &Notify, &SessionState),
) -> RelayEnd {
    let (client_stream, client_buf) = client.into_parts();
    let (client_rd, mut client_wr) = tokio::io::split(client_stream);
    let mut client_rd =
        FrameReader::with_buffer(client_rd, client_buf, shared.limits.max_message_bytes);
    let (up_stream, up_buf) = upstream.reader.into_parts();
    let (up_rd, mut up_wr) = tokio::io::split(up_stream);
    let mut up_rd = FrameReader::with_buffer(up_rd, up_buf, MAX_BACKEND_MESSAGE);

    let denials = Denials::new();
    let write_timeout = shared.limits.client_write_timeout;
    let ctx = Ctx {
        info,
        shared,
        denials: &denials,
    };

    let end = {
        let frontend = client_to_upstream(&mut client_rd, &mut up_wr, &ctx, model, cancel);
        let backend = upstream_to_client(
            &mut up_rd,
            &mut client_wr,
            (&denials, model, shared),
            write_timeout,
            upstream.pid,
            client_pid,
        );
        tokio::select! {
        end = frontend => end,
        end = backend => end,
        Some(Control::Terminate(err)) = control.recv() => RelayEnd::Fatal(err),
        _ = shutdown.reached(Phase::Closing) => RelayEnd::Fatal(PgError::shutting_down()),
        }
    };

    // Closing the upstream socket rolls back any open transaction there.
    let _ = up_wr.write_all(&[b'X', 0, 0, 0, 4]).await;
    let _ = up_wr.shutdown().await;
    if let RelayEnd::Fatal(err) = &end {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = client_wr.write_all(&err.to_bytes()).await;
            let _ = client_wr.flush().await;
        })
        .await;
    }
    let _ = client_wr.shutdown().await;
    end
}

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

/// Split a `Parse` body into (statement name, query text).
fn parse_body(body: &[u8]) -> Option<(&[u8], &[u8], Vec<u32>)> {
    let name_end = body.iter().position(|&b| b == 0)?;
    let rest = &body[name_end + 1..];
    let q_end = rest.iter().position(|&b| b == 0)?;
    // After the query: i16 parameter count and that many u32 OIDs.
    let tail = &rest[q_end + 1..];
    if tail.len() < 2 {
        return None;
    }
    let n = i16::from_be_bytes([tail[0], tail[1]]);
    if n < 0 || tail.len() != 2 + 4 * n as usize {
        return None;
    }
    let types = tail[2..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((&body[..name_end], &rest[..q_end], types))
}

/// What the frontend keeps between frames.
struct Frontend<'a> {
    trail: Trail,
    model: &'a SessionState,
}

/// What one handler needs besides the frame.
struct Ctx<'a> {
    info: &'a SessionInfo,
    shared: &'a Arc<Shared>,
    denials: &'a Denials,
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

async fn client_to_upstream(
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

/// What an approved statement's outcome record says, for its approvers.
fn ran(e: &Event) -> String {
    let Event::Outcome {
        outcome,
        tags,
        sqlstate,
        ..
    } = e
    else {
        return String::new();
    };
    match *outcome {
        "ok" => format!("ran: {}", tags.join("; ")),
        "skipped" => "did not run: an earlier statement in its pipeline failed".to_owned(),
        _ => format!(
            "failed: SQLSTATE {}",
            sqlstate.as_deref().unwrap_or("unknown")
        ),
    }
}

/// An approved statement's outcome with what its transaction did by the
/// next ReadyForQuery (`I` idle: committed, or rolled back on error; `T`
/// still open; `E` failed, so it will roll back).
fn in_transaction(ran: String, status: u8) -> String {
    if !ran.starts_with("ran") {
        return ran;
    }
    match status {
        b'T' => format!(
            "{ran} (inside a transaction still open: it commits only if the transaction does)"
        ),
        b'E' => format!("{ran} (its transaction then failed: it will be rolled back)"),
        _ => ran,
    }
}

/// The session model would grow past [`super::state::MAX_NAMES`].
fn too_many_names() -> PgError {
    PgError::too_many_names(super::state::MAX_NAMES)
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
        b'C' => {
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
        b'D' => {
            state.model.describe();
            forward(out, &frame)
        }
        b'S' => {
            state.model.sync();
            state.trail.sync();
            forward(out, &frame)
        }
        // PostgreSQL ignores a Sync during COPY: the model must know
        // where the COPY ends.
        b'c' | b'f' => {
            state.model.copy_end();
            forward(out, &frame)
        }
        // Flush and COPY data carry no statement: forwarded.
        b'H' | b'd' => forward(out, &frame),
        b'F' => {
            // The function is named by OID and its arguments are opaque:
            // nothing to inspect, so it never runs.
            ctx.shared.metrics.statement(None, Metrics::DENY);
            let e = PgError::function_call_unsupported();
            let n = state.trail.statement(
                "function-call",
                "<FunctionCall message>",
                Decided {
                    class: None,
                    decision: crate::policy::Action::Deny,
                    rule: Some("protocol.function_call".to_owned()),
                    tables: Vec::new(),
                    rollback_undoes: false,
                },
            );
            state.model.query(n, Vec::new(), None);
            ctx.denials.refuse(out, Carrier::Query, e)?;
            Ok(Flow::Continue)
        }
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
struct Judged<'a> {
    /// The text as logged (lossy when it is not valid UTF-8).
    logged: Cow<'a, str>,
    inspection: Inspection,
    /// The prepared statements its `EXECUTE`s run, by name.
    executes: Vec<(String, Arc<Statement>)>,
}

impl Judged<'_> {
    /// Record the statement with the decision made (moving rule and tables
    /// into the record); returns its number.
    fn record(&mut self, trail: &mut Trail, via: &'static str) -> u64 {
        let i = &mut self.inspection;
        let decided = Decided {
            class: i.class,
            decision: i.decision.action(),
            rule: i.rule.take(),
            tables: std::mem::take(&mut i.tables),
            rollback_undoes: i.rollback_undoes,
        };
        trail.statement(via, &self.logged, decided)
    }
}

/// Judge statement text; `None` when a name it runs is not settled yet.
fn judge<'a>(
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
            let inspection = decide(ctx.shared, ctx.info, &classes, sql, origin);
            if classes.unsettled.get() {
                return None;
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

/// Whether FETCH / MOVE may run `portal` (`None`: not settled yet). A
/// portal bound through the protocol from a statement that is not a read
/// runs only by Execute, where it is recorded (and approved); a SQL cursor
/// that is not a plain read only onward, as rewinding runs its query again.
fn fetch_allowed(model: &SessionState, portal: &str, forward: bool) -> Option<Result<(), PgError>> {
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
fn effects(defines: Vec<Defines>, text: impl Fn() -> Arc<str>, record: u64) -> Vec<Effect> {
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
fn gate(class: Class, decision: Decision) -> Gate {
    match decision {
        Decision::Allow if class == Class::Read => Gate::Free,
        Decision::Allow => Gate::Recorded,
        Decision::Hold(h) => Gate::Approval(h),
        Decision::Deny(_) => Gate::Refused,
    }
}

fn on_query(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let Some((0, raw)) = frame.body().split_last() else {
        return Err(bad_message("Query"));
    };
    let Some(mut j) = judge(raw, true, Origin::SimpleQuery, ctx, state.model) else {
        return Ok(Flow::Stall(frame));
    };
    let n = j.record(&mut state.trail, "query");
    let defines = std::mem::take(&mut j.inspection.effects);
    let sql = &j.logged;
    match std::mem::replace(&mut j.inspection.decision, Decision::Allow) {
        Decision::Allow => {
            let text: Option<Arc<str>> = (!defines.is_empty()).then(|| Arc::from(&**sql));
            let effects = effects(defines, || text.clone().unwrap_or_default(), n);
            state.model.query(n, effects, None);
            forward(out, &frame)
        }
        Decision::Deny(e) => {
            state.model.query(n, Vec::new(), None);
            ctx.denials.refuse(out, Carrier::Query, e)?;
            Ok(Flow::Continue)
        }
        Decision::Hold(held) => {
            let text: Arc<str> = Arc::from(&**sql);
            let effects = effects(defines, || text.clone(), n);
            let sql = Arc::from(with_executed(sql, &j.executes));
            drop(j);
            Ok(Flow::Hold(Box::new(HeldMessage {
                frame,
                held,
                sql,
                param_types: Vec::new(),
                then: AfterHold::Query { record: n, effects },
            })))
        }
    }
}

/// The text approvers see and approve for a string that runs prepared
/// statements: it names what each `EXECUTE` runs, so redefining the name
/// afterwards needs an approval of its own.
fn with_executed(sql: &str, executes: &[(String, Arc<Statement>)]) -> String {
    let mut out = sql.to_owned();
    for (name, s) in executes {
        out.push_str(&format!("\n-- where {name} is: {}", s.text));
        if s.param_types.iter().any(|&t| t != 0) {
            out.push_str(&format!(" (parameter types {:?})", s.param_types));
        }
    }
    out
}

fn on_parse(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let Some((name, raw, param_types)) = parse_body(frame.body()) else {
        return Err(bad_message("Parse"));
    };
    // A name that is not valid UTF-8 is refused with the statement.
    let name_ok = std::str::from_utf8(name).is_ok();
    let name = String::from_utf8_lossy(name).into_owned();
    // The model keeps what PostgreSQL keeps; a session may not make it
    // grow without bound.
    if state.model.oversized() {
        let e = too_many_names();
        state.model.parse(&name, refused());
        ctx.denials
            .refuse(out, Carrier::Parse { name: name.into() }, e)?;
        return Ok(Flow::Continue);
    }
    let origin = Origin::Parse { statement: &name };
    let Some(mut j) = judge(raw, name_ok, origin, ctx, state.model) else {
        return Ok(Flow::Stall(frame));
    };
    // Parsing runs nothing: a held statement is prepared, and each Bind of
    // it asks for an approval with its parameter values. Without approvals
    // configured it could never run: refused at once.
    if let Decision::Hold(h) = &j.inspection.decision
        && ctx.shared.approvals.is_none()
    {
        j.inspection.decision = Decision::Deny(h.error.clone());
    }
    let n = j.record(&mut state.trail, "parse");
    let class = j.inspection.class.unwrap_or(Class::Unknown);
    match std::mem::replace(&mut j.inspection.decision, Decision::Allow) {
        Decision::Deny(e) => {
            state.model.parse(&name, refused());
            ctx.denials
                .refuse(out, Carrier::Parse { name: name.into() }, e)?;
            Ok(Flow::Continue)
        }
        decision => {
            let text: Arc<str> = Arc::from(&*j.logged);
            // One statement per Parse: what it defines, if anything, is
            // applied when an execution of it completes.
            let mut effects = effects(
                std::mem::take(&mut j.inspection.effects),
                || text.clone(),
                n,
            );
            let effect = effects.pop().filter(|_| effects.is_empty());
            let statement = Arc::new(Statement {
                text,
                record: n,
                class: Some(class),
                gate: gate(class, decision),
                effect,
                param_types,
                rollback_undoes: j.inspection.rollback_undoes,
            });
            state.model.parse(&name, statement);
            forward(out, &frame)
        }
    }
}

fn on_bind(
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

fn on_execute(
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

/// The portal and statement names of a `Bind` body; `None` when it is
/// malformed. Values are left to PostgreSQL, except for a held statement.
fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let portal_end = body.iter().position(|&b| b == 0)?;
    let rest = &body[portal_end + 1..];
    let stmt_end = rest.iter().position(|&b| b == 0)?;
    Some((&body[..portal_end], &rest[..stmt_end]))
}

/// A whole `Bind`, decoded by pgwire.
fn decode_bind(frame: &Frame) -> Option<Bind> {
    use pgwire::messages::{DecodeContext, Message};
    let mut bytes = frame.bytes.clone();
    Bind::decode(&mut bytes, &DecodeContext::default())
        .ok()
        .flatten()
}

/// Each parameter value with its format (`true`: binary): one format code
/// for all, or one per value.
fn bind_values(b: &Bind) -> Vec<(bool, Option<&[u8]>)> {
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
    inspection
}

/// Count a refusal made before the inspector saw the statement.
fn counted(shared: &Shared, d: Decision) -> Inspection {
    shared.metrics.statement(None, Metrics::DENY);
    d.into()
}

fn bad_message(what: &str) -> RelayEnd {
    RelayEnd::Fatal(PgError::protocol_violation(format!(
        "invalid {what} message format"
    )))
}

async fn write_with_timeout<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    timeout: Duration,
) -> Result<(), RelayEnd> {
    // Nearly every write completes at once: only one that would wait
    // arms a timer (arming and dropping one per answer showed in profiles).
    let mut write = std::pin::pin!(w.write_all(buf));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    let result = match first {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => tokio::time::timeout(timeout, write).await,
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RelayEnd::Io(e)),
        Err(_) => {
            warn!("client stopped reading; closing the session");
            Err(RelayEnd::Fatal(PgError::client_too_slow()))
        }
    }
}

async fn upstream_to_client(
    up: &mut FrameReader<ReadHalf<Stream>>,
    client: &mut WriteHalf<Stream>,
    (denials, model, shared): (&Denials, &SessionState, &Shared),
    write_timeout: Duration,
    upstream_pid: i32,
    client_pid: i32,
) -> RelayEnd {
    let mut out = BytesMut::with_capacity(64 * 1024);
    // Outcomes of approved statements, told to their approvers at the next
    // ReadyForQuery, which says whether the transaction is still open.
    let mut approved: Vec<(String, String)> = Vec::new();
    // Approved statements that ran inside a transaction still open, and the
    // last command tag (COMMIT or ROLLBACK ends it).
    let mut open: Vec<String> = Vec::new();
    let mut last_tag = String::new();
    loop {
        let frame = match up.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return RelayEnd::UpstreamClosed,
            Err(FrameError::Io(e)) => return RelayEnd::Io(e),
            Err(e) => {
                warn!(error = %e, "invalid message from upstream");
                return RelayEnd::Fatal(PgError::upstream_invalid_message());
            }
        };
        let mut next = Some(frame);
        while let Some(mut frame) = next.take() {
            // The outcome is what the client sees: a denial's own error,
            // not the replacement's.
            if let b'E' = frame.tag()
                && let Some(e) = denials.take_for(&frame)
            {
                frame = Frame {
                    bytes: e.to_bytes(),
                };
            }
            if matches!(
                frame.tag(),
                b'1' | b'2' | b'3' | b'C' | b'E' | b'G' | b'I' | b's' | b'T' | b'n' | b'Z'
            ) {
                let events = match model.on_backend(&frame) {
                    Ok(events) => events,
                    Err(Desync(why)) => {
                        warn!(%why, "session model out of step with PostgreSQL");
                        return RelayEnd::Fatal(PgError::lost_track_of_statements());
                    }
                };
                for e in events {
                    if let Event::Outcome {
                        approval: Some(id), ..
                    } = &e
                    {
                        approved.push((id.clone(), ran(&e)));
                    }
                    // Waits when the log's queue is full: a session that
                    // outruns the log slows down instead of piling up
                    // events. An error means the log has failed; the writer
                    // has said so, and new statements are refused.
                    let _ = shared.audit.enqueue(e).await;
                }
            }
            if frame.tag() == b'C' && !open.is_empty() {
                last_tag = String::from_utf8_lossy(
                    frame.body().split(|&b| b == 0).next().unwrap_or_default(),
                )
                .into_owned();
            }
            if frame.tag() == b'Z'
                && (!approved.is_empty() || !open.is_empty())
                && let Some(approvals) = &shared.approvals
            {
                let status = frame.body().first().copied().unwrap_or(b'I');
                if status == b'I' {
                    let how = match last_tag.as_str() {
                        "COMMIT" => "committed",
                        "PREPARE TRANSACTION" => "was prepared for two-phase commit",
                        _ => "was rolled back",
                    };
                    for id in open.drain(..) {
                        approvals.settled(&id, how);
                    }
                }
                for (id, ran) in approved.drain(..) {
                    if status != b'I' && ran.starts_with("ran") {
                        open.push(id.clone());
                    }
                    approvals.finished(&id, in_transaction(ran, status));
                }
            }
            // A setting changed under which PostgreSQL would read the next
            // statements differently from the classifier: however it was
            // done, the session ends before it sends another.
            if frame.tag() == b'S'
                && let Some(e) = crate::upstream::unsafe_parameter(&frame)
            {
                warn!(error = %e, "upstream setting changed mid-session; ending it");
                return RelayEnd::Fatal(PgError::unsafe_setting(e.to_string()));
            }
            match frame.tag() {
                b'A' => {
                    // Notifications carry the sender's pid; clients compare it
                    // with the pid we gave them to spot their own NOTIFYs.
                    if frame.bytes.len() >= 9 && frame.bytes[5..9] == upstream_pid.to_be_bytes() {
                        frame.bytes[5..9].copy_from_slice(&client_pid.to_be_bytes());
                    }
                    out.extend_from_slice(&frame.bytes);
                }
                _ => out.extend_from_slice(&frame.bytes),
            }
            if out.len() < FLUSH_AT {
                next = match up.try_frame() {
                    Ok(f) => f,
                    Err(e) => {
                        debug!(error = %e, "invalid message from upstream");
                        None
                    }
                };
            }
        }
        if let Err(end) = write_with_timeout(client, &out, write_timeout).await {
            return end;
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn parse_body_splits_and_validates() {
        let mut b = BytesMut::new();
        b.put_slice(b"s1\0select $1\0");
        b.put_i16(1);
        b.put_u32(23);
        assert_eq!(
            parse_body(&b),
            Some((&b"s1"[..], &b"select $1"[..], vec![23]))
        );
        assert_eq!(parse_body(b"s1\0select"), None);
        assert_eq!(parse_body(b"\0select 1\0\x00\x05"), None);
    }

    #[test]
    fn marked_errors_are_matched_in_order() {
        use pgwire::messages::{DecodeContext, Message};
        let denials = Denials::new();
        let mut out = BytesMut::new();
        denials
            .refuse(&mut out, Carrier::Query, PgError::portal_missing("first"))
            .unwrap();
        let name = Cow::Borrowed("s1");
        denials
            .refuse(
                &mut out,
                Carrier::Parse { name },
                PgError::portal_missing("second"),
            )
            .unwrap();
        // The replacements are well-formed messages carrying the marker.
        let ctx = DecodeContext::default();
        let q = Query::decode(&mut out, &ctx).unwrap().unwrap();
        assert_eq!(q.query, format!("{}_1", denials.marker));
        let p = Parse::decode(&mut out, &ctx).unwrap().unwrap();
        assert_eq!(
            (p.name.as_deref(), p.query),
            (Some("s1"), format!("{}_2", denials.marker))
        );

        // What PostgreSQL answers a marker it could not parse.
        let syntax_error = |message: String| {
            let mut bytes = BytesMut::new();
            pgwire::messages::response::ErrorResponse::new(vec![
                (b'S', "ERROR".into()),
                (b'C', sqlstate::SYNTAX_ERROR.into()),
                (b'M', message),
            ])
            .encode(&mut bytes)
            .unwrap();
            Frame { bytes }
        };
        let upstream_err = |id: u64| {
            syntax_error(format!(
                "syntax error at or near \"{}_{id}\"",
                denials.marker
            ))
        };
        // The first denial was skipped upstream; the second comes back.
        let e = denials.take_for(&upstream_err(2)).unwrap();
        assert_eq!(e.message, "portal \"second\" does not exist");
        assert!(denials.take_for(&upstream_err(1)).is_none());
        // Other syntax errors pass through.
        let other = syntax_error("syntax error at or near \"x\"".into());
        assert!(denials.take_for(&other).is_none());
        // Whatever follows the marker, no panic: multibyte characters where
        // the separator or the digits should be.
        for tail in ["€", "_€", "_1€", "", "_", "é1", "_\u{10348}"] {
            let frame = syntax_error(format!(
                "syntax error at or near \"{}{tail}\"",
                denials.marker
            ));
            let _ = denials.take_for(&frame);
        }
    }
}
