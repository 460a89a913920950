//! Upstream → client: frames go to the client as PostgreSQL sent them
//! (rows and COPY data are never decoded), after the steps that need to
//! see them: a denial's replacement error is swapped for the firewall's
//! own, the session model takes PostgreSQL's answers and yields outcome
//! records, approvers hear what their statements did, and a setting
//! changed under the classifier ends the session.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tracing::{debug, warn};

use super::denials::Denials;
use super::{FLUSH_AT, RelayEnd};
use crate::approvals::Approvals;
use crate::audit::Event;
use crate::net::stream::Stream;
use crate::protocol::frame::FrameError;
use crate::protocol::{Frame, FrameReader, PgError};
use crate::proxy::Shared;
use crate::proxy::state::{Desync, SessionState};

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

/// Run the backend direction: each frame from PostgreSQL passes the steps
/// in order, then goes to the client (in one write for what is buffered).
pub(super) async fn upstream_to_client(
    up: &mut FrameReader<ReadHalf<Stream>>,
    client: &mut WriteHalf<Stream>,
    (denials, model, shared): (&Denials, &SessionState, &Shared),
    write_timeout: Duration,
    upstream_pid: i32,
    client_pid: i32,
) -> RelayEnd {
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut approvers = Approvers::default();
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
            if let Err(end) = answer_model(&frame, model, shared, &mut approvers).await {
                return end;
            }
            approvers.tell(&frame, shared.approvals.as_deref());
            // A setting changed under which PostgreSQL would read the next
            // statements differently from the classifier: however it was
            // done, the session ends before it sends another.
            if frame.tag() == b'S' {
                if let Some(e) = crate::upstream::unsafe_parameter(&frame) {
                    warn!(error = %e, "upstream setting changed mid-session; ending it");
                    return RelayEnd::Fatal(PgError::unsafe_setting(e.to_string()));
                }
                model.settings.observe(&frame);
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

/// The session model takes PostgreSQL's answer (the messages that change
/// or end what it waits for); the outcome records that answer ends go to
/// the log, and approved ones to their approvers.
async fn answer_model(
    frame: &Frame,
    model: &SessionState,
    shared: &Shared,
    approvers: &mut Approvers,
) -> Result<(), RelayEnd> {
    if !matches!(
        frame.tag(),
        b'1' | b'2' | b'3' | b'C' | b'E' | b'G' | b'I' | b's' | b'T' | b'n' | b'Z'
    ) {
        return Ok(());
    }
    let events = match model.on_backend(frame) {
        Ok(events) => events,
        Err(Desync(why)) => {
            warn!(%why, "session model out of step with PostgreSQL");
            return Err(RelayEnd::Fatal(PgError::lost_track_of_statements()));
        }
    };
    for e in events {
        approvers.outcome(&e);
        // Waits when the log's queue is full: a session that
        // outruns the log slows down instead of piling up
        // events. An error means the log has failed; the writer
        // has said so, and new statements are refused.
        let _ = shared.audit.enqueue(e).await;
    }
    Ok(())
}

/// What approvers of this session's statements have still to hear.
#[derive(Default)]
struct Approvers {
    /// Outcomes of approved statements, told to their approvers at the next
    /// ReadyForQuery, which says whether the transaction is still open.
    approved: Vec<(String, String)>,
    /// Approved statements that ran inside a transaction still open, and
    /// the last command tag (COMMIT or ROLLBACK ends it).
    open: Vec<String>,
    last_tag: String,
}

impl Approvers {
    /// An outcome record: kept for its approvers if the statement was held.
    fn outcome(&mut self, e: &Event) {
        if let Event::Outcome {
            approval: Some(id), ..
        } = e
        {
            self.approved.push((id.clone(), ran(e)));
        }
    }

    /// A command tag is remembered while a transaction with an approved
    /// statement is open; at ReadyForQuery approvers hear how theirs ended.
    fn tell(&mut self, frame: &Frame, approvals: Option<&Approvals>) {
        let (approved, open, last_tag) = (&mut self.approved, &mut self.open, &mut self.last_tag);
        if frame.tag() == b'C' && !open.is_empty() {
            *last_tag =
                String::from_utf8_lossy(frame.body().split(|&b| b == 0).next().unwrap_or_default())
                    .into_owned();
        }
        if frame.tag() == b'Z'
            && (!approved.is_empty() || !open.is_empty())
            && let Some(approvals) = approvals
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
    }
}
