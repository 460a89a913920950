//! Before authentication: TLS and GSS negotiation, the startup packet,
//! cancel requests, and the `[tls] require` refusal of plaintext clients.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::net::stream::Stream;
use crate::protocol::startup::{
    MAX_STARTUP_PACKET, StartupPacket, StartupParams, parse_startup_packet,
};
use crate::protocol::{FrameReader, PgError};
use crate::proxy::Shared;
use crate::upstream;

/// What the startup phase produced.
pub(super) enum Started {
    Session(FrameReader<Stream>, StartupParams),
    /// A startup packet over plain TCP while `[tls] require` is on: refused
    /// with this error, in plain text, before any authentication.
    NeedsTls(FrameReader<Stream>, PgError),
    /// A cancel request was handled; the connection is done.
    Cancelled,
    /// The client went away before saying anything useful.
    Gone,
}

pub(super) type StartupError = (Option<FrameReader<Stream>>, PgError);

/// Negotiate TLS / GSS and read the startup packet, or serve a cancel request.
pub(super) async fn startup(
    mut reader: FrameReader<Stream>,
    shared: &Arc<Shared>,
) -> Result<Started, StartupError> {
    loop {
        let packet = match reader.next_startup_packet(MAX_STARTUP_PACKET).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Started::Gone),
            Err(e) => {
                let err = PgError::protocol_violation(format!("invalid startup packet: {e}"));
                return Err((Some(reader), err));
            }
        };
        let packet = match parse_startup_packet(packet) {
            Ok(p) => p,
            Err(e) => return Err((Some(reader), e)),
        };
        match packet {
            StartupPacket::SslRequest => {
                // Bytes after SSLRequest but before the handshake would be
                // read as if they came over TLS (CVE-2021-23214): refuse.
                if reader.buffered() > 0 {
                    let err =
                        PgError::protocol_violation("received unencrypted data after SSL request");
                    return Err((Some(reader), err));
                }
                let (stream, _) = reader.into_parts();
                let tcp = match stream {
                    Stream::Plain(tcp) => tcp,
                    // A second SSLRequest inside TLS is a protocol violation.
                    other => {
                        let r = shared.pre_auth_reader(other);
                        return Err((
                            Some(r),
                            PgError::protocol_violation("duplicate SSL request"),
                        ));
                    }
                };
                let Some(acceptor) = &shared.tls else {
                    let mut tcp = tcp;
                    if tcp.write_all(b"N").await.is_err() {
                        return Ok(Started::Gone);
                    }
                    reader = shared.pre_auth_reader(Stream::Plain(tcp));
                    continue;
                };
                let mut tcp = tcp;
                if tcp.write_all(b"S").await.is_err() {
                    return Ok(Started::Gone);
                }
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        reader = shared.pre_auth_reader(Stream::ServerTls(Box::new(tls)));
                    }
                    Err(e) => {
                        debug!(error = %e, "TLS handshake failed");
                        return Ok(Started::Gone);
                    }
                }
            }
            StartupPacket::GssEncRequest => {
                if reader.get_mut().write_all(b"N").await.is_err() {
                    return Ok(Started::Gone);
                }
            }
            StartupPacket::Cancel { pid, key } => {
                cancel(shared, pid, key).await;
                // The client waits for the server to close. Over TLS
                // (libpq 17's PQcancelCreate, psycopg's cancel_safe) that
                // must be a close_notify: a bare TCP close is "SSL error:
                // unexpected eof" to OpenSSL, and the cancel reported failed.
                let _ = reader.get_mut().shutdown().await;
                return Ok(Started::Cancelled);
            }
            StartupPacket::Startup(params) => {
                if shared.tls_required && !reader.get_ref().is_tls() {
                    info!(
                        user = params.user().unwrap_or(""),
                        "client without TLS refused: [tls] require is on"
                    );
                    return Ok(Started::NeedsTls(reader, needs_tls()));
                }
                return Ok(Started::Session(reader, params));
            }
        }
    }
}

/// The refusal of a plaintext client when `[tls] require` is on. 28000, as
/// PostgreSQL answers a client no `hostssl`-only rule admits.
fn needs_tls() -> PgError {
    PgError::tls_required()
}

/// Forward a cancel request if it names a live session with the right key.
/// Like PostgreSQL, the client gets no answer either way.
async fn cancel(shared: &Arc<Shared>, pid: i32, key: i32) {
    match shared.registry.cancel_target(pid, key) {
        Some((upid, ukey)) => {
            info!(pid, "forwarding cancel request");
            if let Err(e) = upstream::send_cancel(&shared.upstream, upid, ukey).await {
                warn!(error = %e, "cancel request could not be forwarded");
            }
        }
        None => info!(pid, "cancel request with unknown pid or wrong key ignored"),
    }
}
