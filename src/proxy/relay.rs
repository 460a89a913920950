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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn};

use super::Shared;
use super::registry::Control;
use super::stream::Stream;
use super::upstream::{MAX_BACKEND_MESSAGE, Upstream};
use crate::inspect::{Decision, Origin, SessionInfo};
use crate::metrics::Metrics;
use crate::protocol::error::decode_error_fields;
use crate::protocol::frame::FrameError;
use crate::protocol::{Frame, FrameReader, PgError, sqlstate};
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

/// Denials sent upstream whose marked error has not come back yet.
#[derive(Default)]
struct Denials {
    next: u64,
    pending: VecDeque<(u64, PgError)>,
}

/// Run the relay until either side ends.
pub async fn run(
    client: FrameReader<Stream>,
    upstream: Upstream,
    info: &SessionInfo,
    shared: &Arc<Shared>,
    mut control: mpsc::Receiver<Control>,
    mut shutdown: Shutdown,
    client_pid: i32,
) -> RelayEnd {
    let (client_stream, client_buf) = client.into_parts();
    let (client_rd, mut client_wr) = tokio::io::split(client_stream);
    let mut client_rd =
        FrameReader::with_buffer(client_rd, client_buf, shared.limits.max_message_bytes);
    let (up_stream, up_buf) = upstream.reader.into_parts();
    let (up_rd, mut up_wr) = tokio::io::split(up_stream);
    let mut up_rd = FrameReader::with_buffer(up_rd, up_buf, MAX_BACKEND_MESSAGE);

    // The marker is random per session so a client cannot forge one to make
    // its own error look like something else.
    let marker = format!("infraveil_denied_{:016x}", rand::random::<u64>());
    let denials = Mutex::new(Denials::default());
    let write_timeout = shared.limits.client_write_timeout;

    let end = {
        let frontend =
            client_to_upstream(&mut client_rd, &mut up_wr, info, shared, &marker, &denials);
        let backend = upstream_to_client(
            &mut up_rd,
            &mut client_wr,
            &marker,
            &denials,
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

/// Bytes of a `Query` or `Parse` statement, as UTF-8.
fn statement_text(bytes: &[u8]) -> Result<&str, PgError> {
    std::str::from_utf8(bytes).map_err(|_| {
        PgError::error(
            sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            "invalid byte sequence for encoding \"UTF8\" in statement",
        )
    })
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

async fn client_to_upstream(
    client: &mut FrameReader<ReadHalf<Stream>>,
    up: &mut WriteHalf<Stream>,
    info: &SessionInfo,
    shared: &Arc<Shared>,
    marker: &str,
    denials: &Mutex<Denials>,
) -> RelayEnd {
    let mut out = BytesMut::with_capacity(16 * 1024);
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
            match handle_client_frame(frame, &mut out, info, shared, marker, denials) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = up.write_all(&out).await;
                    return RelayEnd::ClientTerminated;
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
        if let Err(e) = up.write_all(&out).await {
            return RelayEnd::Io(e);
        }
        out.clear();
    }
}

/// Inspect one client frame and queue what goes upstream. `Ok(false)` after
/// `Terminate`.
fn handle_client_frame(
    frame: Frame,
    out: &mut BytesMut,
    info: &SessionInfo,
    shared: &Arc<Shared>,
    marker: &str,
    denials: &Mutex<Denials>,
) -> Result<bool, RelayEnd> {
    let decide = |sql: &str, origin: Origin<'_>| {
        let span = info_span!("statement", origin = ?origin);
        let _g = span.enter();
        let d = shared.inspector.inspect(info, sql, origin);
        match &d {
            Decision::Allow => Metrics::inc(&shared.metrics.statements_allowed),
            Decision::Deny(e) => {
                Metrics::inc(&shared.metrics.statements_denied);
                info!(reason = %e.message, "statement denied");
            }
            Decision::Hold(e) => {
                Metrics::inc(&shared.metrics.statements_held);
                info!(reason = %e.message, "statement needs approval");
            }
        }
        d
    };
    match frame.tag() {
        b'Q' => {
            let body = frame.body();
            let sql = match body.split_last() {
                Some((0, sql)) => sql,
                _ => return Err(bad_message("Query")),
            };
            let decision = match statement_text(sql) {
                Ok(sql) => decide(sql, Origin::SimpleQuery),
                Err(e) => Decision::Deny(e),
            };
            match decision {
                Decision::Allow => out.extend_from_slice(&frame.bytes),
                Decision::Deny(e) | Decision::Hold(e) => {
                    let id = push_denial(denials, e);
                    put_query(out, &format!("{marker}_{id}"));
                }
            }
        }
        b'P' => {
            let Some((name, sql)) = parse_body(frame.body()) else {
                return Err(bad_message("Parse"));
            };
            let name_str = String::from_utf8_lossy(name);
            let decision = match statement_text(sql) {
                Ok(sql) => decide(
                    sql,
                    Origin::Parse {
                        statement: &name_str,
                    },
                ),
                Err(e) => Decision::Deny(e),
            };
            match decision {
                Decision::Allow => out.extend_from_slice(&frame.bytes),
                Decision::Deny(e) | Decision::Hold(e) => {
                    let id = push_denial(denials, e);
                    put_parse(out, name, &format!("{marker}_{id}"));
                }
            }
        }
        b'F' => {
            // The function is named by OID and its arguments are opaque:
            // nothing to inspect, so it never runs.
            let e = PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "the FunctionCall protocol message is not supported through infraveil",
            )
            .with_hint("call the function with SELECT instead");
            Metrics::inc(&shared.metrics.statements_denied);
            let id = push_denial(denials, e);
            put_query(out, &format!("{marker}_{id}"));
        }
        b'X' => {
            out.extend_from_slice(&frame.bytes);
            return Ok(false);
        }
        // Bind, Execute, Describe, Close, Flush, Sync and the COPY messages
        // carry no statement text: forwarded untouched.
        b'B' | b'E' | b'D' | b'C' | b'H' | b'S' | b'd' | b'c' | b'f' => {
            out.extend_from_slice(&frame.bytes);
        }
        t => {
            Metrics::inc(&shared.metrics.protocol_errors_total);
            return Err(RelayEnd::Fatal(PgError::protocol_violation(format!(
                "invalid frontend message type {t}"
            ))));
        }
    }
    Ok(true)
}

fn bad_message(what: &str) -> RelayEnd {
    RelayEnd::Fatal(PgError::protocol_violation(format!(
        "invalid {what} message format"
    )))
}

fn push_denial(denials: &Mutex<Denials>, e: PgError) -> u64 {
    let mut d = denials.lock().unwrap_or_else(|p| p.into_inner());
    d.next += 1;
    let id = d.next;
    if d.pending.len() >= MAX_PENDING_DENIALS {
        d.pending.pop_front();
    }
    d.pending.push_back((id, e));
    id
}

/// A `Query` whose text is a lone identifier: PostgreSQL fails it with a
/// syntax error that quotes the identifier back.
fn put_query(out: &mut BytesMut, marker: &str) {
    out.put_u8(b'Q');
    out.put_i32(4 + marker.len() as i32 + 1);
    out.put_slice(marker.as_bytes());
    out.put_u8(0);
}

fn put_parse(out: &mut BytesMut, name: &[u8], marker: &str) {
    out.put_u8(b'P');
    out.put_i32(4 + name.len() as i32 + 1 + marker.len() as i32 + 1 + 2);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(marker.as_bytes());
    out.put_u8(0);
    out.put_i16(0);
}

/// If `frame` is the upstream's error for one of our markers, the firewall's
/// error to send instead.
fn replace_marked_error(frame: &Frame, marker: &str, denials: &Mutex<Denials>) -> Option<PgError> {
    let mut d = denials.lock().unwrap_or_else(|p| p.into_inner());
    if d.pending.is_empty() {
        return None;
    }
    let fields = decode_error_fields(&frame.bytes)?;
    let code = fields.iter().find(|f| f.0 == b'C')?;
    if code.1 != sqlstate::SYNTAX_ERROR {
        return None;
    }
    let msg = &fields.iter().find(|f| f.0 == b'M')?.1;
    let start = msg.find(marker)? + marker.len() + 1;
    let digits: String = msg[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let id: u64 = digits.parse().ok()?;
    // Responses come in order: denials older than this one were skipped by
    // PostgreSQL (it was already in an error state) and will never return.
    while let Some((front, _)) = d.pending.front() {
        if *front < id {
            d.pending.pop_front();
        } else {
            break;
        }
    }
    match d.pending.front() {
        Some((front, _)) if *front == id => d.pending.pop_front().map(|(_, e)| e),
        _ => None,
    }
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
    marker: &str,
    denials: &Mutex<Denials>,
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
            match frame.tag() {
                b'E' => match replace_marked_error(&frame, marker, denials) {
                    Some(e) => e.encode(&mut out),
                    None => out.extend_from_slice(&frame.bytes),
                },
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
        let denials = Mutex::new(Denials::default());
        let a = push_denial(&denials, PgError::error("42501", "first"));
        let b = push_denial(&denials, PgError::error("42501", "second"));
        let marker = "infraveil_denied_00ff";
        let upstream_err = |id: u64| Frame {
            bytes: PgError::error(
                sqlstate::SYNTAX_ERROR,
                format!("syntax error at or near \"{marker}_{id}\""),
            )
            .to_bytes(),
        };
        // The first denial was skipped upstream; the second comes back.
        let e = replace_marked_error(&upstream_err(b), marker, &denials).unwrap();
        assert_eq!(e.message, "second");
        assert!(replace_marked_error(&upstream_err(a), marker, &denials).is_none());
        // Other syntax errors pass through.
        let other = Frame {
            bytes: PgError::error(sqlstate::SYNTAX_ERROR, "syntax error at or near \"x\"")
                .to_bytes(),
        };
        assert!(replace_marked_error(&other, marker, &denials).is_none());
    }
}
