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
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::extendedquery::{Bind, Parse};
use pgwire::messages::simplequery::Query;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, info_span, warn};

use super::Shared;
use super::hold::{self, Outcome};
use super::registry::Control;
use super::stream::Stream;
use super::trail::{Decided, Tracker, Trail};
use super::upstream::{MAX_BACKEND_MESSAGE, Upstream};
use crate::inspect::{Decision, Held, Inspection, Origin, SessionInfo, SessionMemory};
use crate::metrics::Metrics;
use crate::protocol::frame::FrameError;
use crate::protocol::{self, ErrorFields, Frame, FrameReader, PgError, sqlstate};
use crate::shutdown::{Phase, Shutdown};

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
    /// A refused `Bind` (of an approved statement, a second time).
    Bind {
        portal: Cow<'a, str>,
    },
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
        if code != sqlstate::SYNTAX_ERROR && code != sqlstate::INVALID_SQL_STATEMENT_NAME {
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
    (client_pid, cancel): (i32, &Notify),
) -> RelayEnd {
    let (client_stream, client_buf) = client.into_parts();
    let (client_rd, mut client_wr) = tokio::io::split(client_stream);
    let mut client_rd =
        FrameReader::with_buffer(client_rd, client_buf, shared.limits.max_message_bytes);
    let (up_stream, up_buf) = upstream.reader.into_parts();
    let (up_rd, mut up_wr) = tokio::io::split(up_stream);
    let mut up_rd = FrameReader::with_buffer(up_rd, up_buf, MAX_BACKEND_MESSAGE);

    let denials = Denials::new();
    let tracker = Tracker::new(info.id, &info.identity);
    let write_timeout = shared.limits.client_write_timeout;

    let end = {
        let frontend = client_to_upstream(
            &mut client_rd,
            &mut up_wr,
            info,
            shared,
            (&denials, &tracker),
            cancel,
        );
        let backend = upstream_to_client(
            &mut up_rd,
            &mut client_wr,
            (&denials, &tracker, shared),
            write_timeout,
            upstream.pid,
            client_pid,
        );
        tokio::select! {
        end = frontend => end,
        end = backend => end,
        Some(Control::Terminate(err)) = control.recv() => RelayEnd::Fatal(err),
        _ = shutdown.reached(Phase::Closing) => RelayEnd::Fatal(PgError::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        ).with_detail("infraveil is shutting down")),
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
        return Err(PgError::error(
            sqlstate::PROTOCOL_VIOLATION,
            "invalid message format: statement contains a zero byte",
        ));
    }
    std::str::from_utf8(bytes).map_err(|_| invalid_utf8())
}

fn invalid_utf8() -> PgError {
    PgError::error(
        sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        "invalid byte sequence for encoding \"UTF8\" in statement",
    )
}

/// Split a `Parse` body into (statement name, query text).
fn parse_body(body: &[u8]) -> Option<(&[u8], &[u8])> {
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
    Some((&body[..name_end], &rest[..q_end]))
}

/// What the frontend keeps between frames.
struct Frontend<'a> {
    memory: SessionMemory,
    trail: Trail,
    tracker: &'a Tracker,
    /// Prepared statements (by name, `""` for the unnamed one) that ran
    /// through an approval, and whether they have been bound yet: an
    /// approval covers one run, so a second `Bind` is refused.
    approved: HashMap<String, bool>,
}

/// What to do after one client frame.
enum Flow {
    Continue,
    /// `Terminate`: forward what is queued and stop.
    Terminate,
    /// The policy holds this statement: ask for approval first.
    Hold(Box<HeldMessage>),
}

struct HeldMessage {
    frame: Frame,
    held: Box<Held>,
    sql: String,
    /// The statement name of a `Parse` (`None` for a `Query`).
    parse_name: Option<String>,
    /// Its number in the audit trail.
    statement: u64,
}

/// The session ends rather than forward anything unaudited.
fn audit_failed(e: crate::audit::AuditError) -> RelayEnd {
    RelayEnd::Fatal(PgError::fatal(sqlstate::IO_ERROR, e.to_string()).with_hint(
        "the statement was not forwarded; ask the operator to check infraveil's audit log",
    ))
}

async fn client_to_upstream(
    client: &mut FrameReader<ReadHalf<Stream>>,
    up: &mut WriteHalf<Stream>,
    info: &SessionInfo,
    shared: &Arc<Shared>,
    (denials, tracker): (&Denials, &Tracker),
    cancel: &Notify,
) -> RelayEnd {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut state = Frontend {
        memory: SessionMemory::default(),
        trail: Trail::new(info),
        tracker,
        approved: HashMap::new(),
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
            match handle_client_frame(frame, &mut out, info, shared, denials, &mut state) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Terminate) => {
                    if let Err(e) = state.trail.commit(&shared.audit).await {
                        return audit_failed(e);
                    }
                    let _ = up.write_all(&out).await;
                    return RelayEnd::ClientTerminated;
                }
                Ok(Flow::Hold(m)) => {
                    // What came before the held statement runs now; the
                    // rest of the pipeline waits behind it, in order.
                    if let Err(e) = state.trail.commit(&shared.audit).await {
                        return audit_failed(e);
                    }
                    if let Err(e) = up.write_all(&out).await {
                        return RelayEnd::Io(e);
                    }
                    out.clear();
                    let outcome = hold::hold(shared, info, &m.held, &m.sql, client, cancel).await;
                    let carrier = match &m.parse_name {
                        Some(name) => Carrier::Parse {
                            name: Cow::Borrowed(name),
                        },
                        None => Carrier::Query,
                    };
                    match outcome {
                        Outcome::Run => {
                            out.extend_from_slice(&m.frame.bytes);
                            match &m.parse_name {
                                Some(name) => state.trail.parsed(name, m.statement),
                                None => state.tracker.query(m.statement),
                            }
                            if let Some(name) = &m.parse_name {
                                state.approved.insert(name.clone(), false);
                                // `EXECUTE name` in SQL is judged by this
                                // class, so it is held again.
                                if !name.is_empty() {
                                    state.memory.prepared.remember(name, m.held.class);
                                }
                            }
                        }
                        Outcome::Refuse(e) => {
                            if m.parse_name.is_none() {
                                state.tracker.query(m.statement);
                            }
                            if let Err(end) = denials.refuse(&mut out, carrier, e) {
                                return end;
                            }
                        }
                        Outcome::ClientGone => return RelayEnd::ClientClosed,
                    }
                }
                Err(end) => return end,
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
        if let Err(e) = state.trail.commit(&shared.audit).await {
            return audit_failed(e);
        }
        if let Err(e) = up.write_all(&out).await {
            return RelayEnd::Io(e);
        }
        out.clear();
    }
}

/// Inspect one client frame and queue what goes upstream.
fn handle_client_frame(
    frame: Frame,
    out: &mut BytesMut,
    info: &SessionInfo,
    shared: &Arc<Shared>,
    denials: &Denials,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let (carrier, sql) = match frame.tag() {
        b'Q' => match frame.body().split_last() {
            Some((0, sql)) => (Carrier::Query, sql),
            _ => return Err(bad_message("Query")),
        },
        b'P' => match parse_body(frame.body()) {
            Some((name, sql)) => (
                Carrier::Parse {
                    name: String::from_utf8_lossy(name),
                },
                sql,
            ),
            None => return Err(bad_message("Parse")),
        },
        b'F' => {
            // The function is named by OID and its arguments are opaque:
            // nothing to inspect, so it never runs.
            shared.metrics.statement(None, Metrics::DENY);
            let e = PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "the FunctionCall protocol message is not supported through infraveil",
            )
            .with_hint("call the function with SELECT instead");
            let n = state.trail.statement(
                "function-call",
                "<FunctionCall message>",
                Decided {
                    class: None,
                    decision: "deny",
                    rule: Some("protocol.function_call".to_owned()),
                    tables: Vec::new(),
                },
            );
            state.tracker.query(n);
            denials.refuse(out, Carrier::Query, e)?;
            return Ok(Flow::Continue);
        }
        b'X' => {
            out.extend_from_slice(&frame.bytes);
            return Ok(Flow::Terminate);
        }
        b'B' => {
            let Some((portal, statement)) = bind_names(frame.body()) else {
                return Err(bad_message("Bind"));
            };
            // An approved statement runs once: its second Bind is refused.
            if let Some(bound) = state
                .approved
                .get_mut(String::from_utf8_lossy(statement).as_ref())
            {
                if *bound {
                    let e = PgError::error(
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        "an approved statement runs once; prepare it again to ask for a new approval",
                    );
                    let portal = String::from_utf8_lossy(portal);
                    denials.refuse(out, Carrier::Bind { portal }, e)?;
                    return Ok(Flow::Continue);
                }
                *bound = true;
            }
            state.trail.bound(
                &String::from_utf8_lossy(portal),
                &String::from_utf8_lossy(statement),
            );
            out.extend_from_slice(&frame.bytes);
            return Ok(Flow::Continue);
        }
        b'E' => {
            let body = frame.body();
            let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            let n = state.trail.execute(&String::from_utf8_lossy(&body[..end]));
            state.tracker.execute(n);
            out.extend_from_slice(&frame.bytes);
            return Ok(Flow::Continue);
        }
        b'S' => {
            state.tracker.sync();
            out.extend_from_slice(&frame.bytes);
            return Ok(Flow::Continue);
        }
        b'C' => {
            // Closing an approved named statement ends its approval. (A
            // failed re-Parse of the same name would not replace it, so only
            // Close does.)
            if let [b'S', name @ .., 0] = frame.body() {
                state
                    .approved
                    .remove(String::from_utf8_lossy(name).as_ref());
            }
            out.extend_from_slice(&frame.bytes);
            return Ok(Flow::Continue);
        }
        // Describe, Flush and the COPY messages carry no statement text:
        // forwarded untouched.
        b'D' | b'H' | b'd' | b'c' | b'f' => {
            out.extend_from_slice(&frame.bytes);
            return Ok(Flow::Continue);
        }
        t => {
            Metrics::inc(&shared.metrics.protocol_errors_total);
            return Err(RelayEnd::Fatal(PgError::protocol_violation(format!(
                "invalid frontend message type {t}"
            ))));
        }
    };
    // A lossy (owned) statement name means it was not valid UTF-8 either.
    let name_ok = !matches!(
        &carrier,
        Carrier::Parse {
            name: Cow::Owned(_)
        }
    );
    // A new Query or unnamed Parse replaces the unnamed statement.
    match &carrier {
        Carrier::Parse { name } if !name.is_empty() => {}
        _ => {
            state.approved.remove("");
        }
    }
    let text = match statement_text(sql) {
        Ok(sql) if name_ok => Ok(sql),
        Ok(_) => Err(invalid_utf8()),
        Err(e) => Err(e),
    };
    let inspection = match &text {
        // Fail closed: nothing runs that the log cannot record.
        Ok(_) if !shared.audit.healthy() => counted(
            shared,
            Decision::Deny(
                PgError::error(
                    sqlstate::IO_ERROR,
                    "infraveil refuses statements: the audit log cannot be written",
                )
                .with_hint("ask the operator to check infraveil's logs and data directory"),
            ),
        ),
        Ok(sql) => {
            let origin = match &carrier {
                Carrier::Parse { name } => Origin::Parse {
                    statement: name.as_ref(),
                },
                _ => Origin::SimpleQuery,
            };
            decide(shared, info, &mut state.memory, sql, origin)
        }
        Err(e) => counted(shared, Decision::Deny(e.clone())),
    };
    let Inspection {
        decision,
        class,
        rule,
        tables,
    } = inspection;
    let (via, parse_name) = match &carrier {
        Carrier::Parse { name } => ("parse", Some(name.as_ref())),
        _ => ("query", None),
    };
    let lossy;
    let logged: &str = match &text {
        Ok(sql) => sql,
        Err(_) => {
            lossy = String::from_utf8_lossy(sql);
            &lossy
        }
    };
    // Called in exactly one arm below: it moves rule and tables into the record.
    let decided = move |decision| Decided {
        class,
        decision,
        rule,
        tables,
    };
    match decision {
        Decision::Allow => {
            let n = state.trail.statement(via, logged, decided("allow"));
            match parse_name {
                Some(name) => state.trail.parsed(name, n),
                None => state.tracker.query(n),
            }
            out.extend_from_slice(&frame.bytes)
        }
        Decision::Deny(e) => {
            let n = state.trail.statement(via, logged, decided("deny"));
            if parse_name.is_none() {
                state.tracker.query(n);
            }
            denials.refuse(out, carrier, e)?
        }
        Decision::Hold(held) => {
            let statement = state.trail.statement(via, logged, decided("hold"));
            let sql = logged.to_owned();
            let parse_name = parse_name.map(str::to_owned);
            return Ok(Flow::Hold(Box::new(HeldMessage {
                frame,
                held,
                sql,
                parse_name,
                statement,
            })));
        }
    }
    Ok(Flow::Continue)
}

/// Split a `Bind` body into (portal, statement name).
fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let portal_end = body.iter().position(|&b| b == 0)?;
    let rest = &body[portal_end + 1..];
    let stmt_end = rest.iter().position(|&b| b == 0)?;
    Some((&body[..portal_end], &rest[..stmt_end]))
}

/// Ask the inspector, inside a per-statement span, and count the decision.
fn decide(
    shared: &Shared,
    info: &SessionInfo,
    memory: &mut SessionMemory,
    sql: &str,
    origin: Origin<'_>,
) -> Inspection {
    let span = info_span!("statement", origin = ?origin);
    let _g = span.enter();
    let inspection = shared.inspector.inspect(info, memory, sql, origin);
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
    match tokio::time::timeout(timeout, w.write_all(buf)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RelayEnd::Io(e)),
        Err(_) => {
            warn!("client stopped reading; closing the session");
            Err(RelayEnd::Fatal(PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                "client did not read results in time",
            )))
        }
    }
}

async fn upstream_to_client(
    up: &mut FrameReader<ReadHalf<Stream>>,
    client: &mut WriteHalf<Stream>,
    (denials, tracker, shared): (&Denials, &Tracker, &Shared),
    write_timeout: Duration,
    upstream_pid: i32,
    client_pid: i32,
) -> RelayEnd {
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let frame = match up.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return RelayEnd::UpstreamClosed,
            Err(FrameError::Io(e)) => return RelayEnd::Io(e),
            Err(e) => {
                warn!(error = %e, "invalid message from upstream");
                return RelayEnd::Fatal(PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    "infraveil received an invalid message from the upstream database",
                ));
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
            if matches!(frame.tag(), b'C' | b'E' | b'I' | b's' | b'Z') {
                for e in tracker.on_backend(&frame) {
                    // Waits when the log's queue is full: a session that
                    // outruns the log slows down instead of piling up
                    // events. An error means the log has failed; the writer
                    // has said so, and new statements are refused.
                    let _ = shared.audit.enqueue(e).await;
                }
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
        assert_eq!(parse_body(&b), Some((&b"s1"[..], &b"select $1"[..])));
        assert_eq!(parse_body(b"s1\0select"), None);
        assert_eq!(parse_body(b"\0select 1\0\x00\x05"), None);
    }

    #[test]
    fn marked_errors_are_matched_in_order() {
        use pgwire::messages::{DecodeContext, Message};
        let denials = Denials::new();
        let mut out = BytesMut::new();
        denials
            .refuse(&mut out, Carrier::Query, PgError::error("42501", "first"))
            .unwrap();
        let name = Cow::Borrowed("s1");
        denials
            .refuse(
                &mut out,
                Carrier::Parse { name },
                PgError::error("42501", "second"),
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

        let upstream_err = |id: u64| Frame {
            bytes: PgError::error(
                sqlstate::SYNTAX_ERROR,
                format!("syntax error at or near \"{}_{id}\"", denials.marker),
            )
            .to_bytes(),
        };
        // The first denial was skipped upstream; the second comes back.
        let e = denials.take_for(&upstream_err(2)).unwrap();
        assert_eq!(e.message, "second");
        assert!(denials.take_for(&upstream_err(1)).is_none());
        // Other syntax errors pass through.
        let other = Frame {
            bytes: PgError::error(sqlstate::SYNTAX_ERROR, "syntax error at or near \"x\"")
                .to_bytes(),
        };
        assert!(denials.take_for(&other).is_none());
        // Whatever follows the marker, no panic: multibyte characters where
        // the separator or the digits should be.
        for tail in ["€", "_€", "_1€", "", "_", "é1", "_\u{10348}"] {
            let frame = Frame {
                bytes: PgError::error(
                    sqlstate::SYNTAX_ERROR,
                    format!("syntax error at or near \"{}{tail}\"", denials.marker),
                )
                .to_bytes(),
            };
            let _ = denials.take_for(&frame);
        }
    }
}
