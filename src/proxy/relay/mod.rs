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
//!
//! Where each part lives: [`run`] splits both connections and runs the two
//! directions until one ends or the session is told to stop; `frontend`
//! is client → upstream (a loop of named steps, and one handler per
//! message), `backend` is upstream → client, and `denials` keeps the
//! replacements of refused statements that the two directions share.

mod backend;
mod denials;
mod frontend;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use self::denials::Denials;
use super::Shared;
use super::registry::Control;
use super::state::SessionState;
use crate::net::stream::Stream;
use crate::policy::inspect::SessionInfo;
use crate::protocol::{FrameReader, PgError};
use crate::shutdown::{Phase, Shutdown};
use crate::upstream::{MAX_BACKEND_MESSAGE, Upstream};

/// Write to the peer once this much is queued, even if more frames are ready.
const FLUSH_AT: usize = 256 * 1024;

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
        let frontend =
            frontend::client_to_upstream(&mut client_rd, &mut up_wr, &ctx, model, cancel);
        let backend = backend::upstream_to_client(
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

/// What one handler needs besides the frame.
struct Ctx<'a> {
    info: &'a SessionInfo,
    shared: &'a Arc<Shared>,
    denials: &'a Denials,
}
