//! One client connection, as an explicit state machine:
//! startup (TLS / GSS negotiation, cancel requests, the `[tls] require`
//! refusal of plaintext clients) → authenticating →
//! connecting upstream → relaying (see [`super::relay`]) → closed.

mod login;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::startup::{Authentication, BackendKeyData, SecretKey};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, info_span, warn};

use self::login::login;
use self::startup::{Started, startup};
use super::Shared;
use super::registry::Registration;
use super::relay::{self, RelayEnd};
use crate::audit::Event;
use crate::auth;
use crate::metrics::Metrics;
use crate::net::stream::Stream;
use crate::policy::inspect::SessionInfo;
use crate::protocol::{self, FrameReader, PgError};
use crate::shutdown::Shutdown;
use crate::upstream;

/// Serve one client connection until it ends.
pub async fn run(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: Shutdown) {
    let id = shared.registry.next_session_id();
    let span = info_span!("session", id, client = %peer, identity = tracing::field::Empty);
    Metrics::inc(&shared.metrics.connections_total);
    shared
        .metrics
        .connections_active
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    serve(tcp, peer, id, &shared, shutdown)
        .instrument(span)
        .await;
    shared
        .metrics
        .connections_active
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: &Arc<Shared>,
    shutdown: Shutdown,
) {
    let _ = tcp.set_nodelay(true);
    let mut reader = shared.pre_auth_reader(Stream::Plain(tcp));
    // Unauthenticated clients are bounded in number as well as in message
    // size, so together they hold a bounded amount of memory.
    let Ok(authenticating) = shared.authenticating.try_acquire() else {
        warn!(client = %peer, "too many clients logging in at once");
        let err = PgError::too_many_logging_in();
        send_error(reader.get_mut(), &err).await;
        return;
    };
    let mut record = ConnectionRecord {
        shared,
        session: id,
        opened: false,
        identity: None,
        grant: None,
        reason: "authentication timed out".into(),
    };

    // Everything up to a logged-in upstream runs under the auth timeout, so a
    // client that connects and says nothing cannot hold a slot forever.
    let setup = tokio::time::timeout(
        shared.limits.auth_timeout,
        set_up(reader, peer, id, shared, &mut record),
    )
    .await;

    drop(authenticating);
    let (mut client, info, up) = match setup {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(_) => {
            info!("authentication timed out");
            // We may be mid-TLS-handshake, where no error can be sent; the
            // reader was moved into the timed-out future and is dropped, which
            // closes the socket.
            return;
        }
    };

    record.identity = Some(info.identity.clone());
    record.grant = Some(info.credential_id.clone());
    record.reason = "ended during login".into();
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(4);
    let model = Arc::new(super::state::SessionState::new(info.id, &info.identity));
    for f in &up.startup_frames {
        model.settings.observe(f);
    }
    let reg = shared.registry.register(
        up.pid,
        up.secret_key,
        &info.credential_id,
        control_tx,
        model,
    );
    // A grant revoked or expired between the password check and this
    // registration was missed by the sweep: check once more, now that any
    // later change will find this session.
    let state = shared.credentials.state(&info.credential_id);
    if state != auth::CredentialState::Active {
        info!(credential = %info.credential_id, ?state, "credential ended during login");
        send_error(
            client.get_mut(),
            &crate::grants::session_ended(&info.credential_id, &state),
        )
        .await;
        return;
    }

    // Tell the client it is in: AuthenticationOk, the upstream's parameters,
    // our own cancel key, and the upstream's ReadyForQuery status.
    let (hello, encoded) = welcome(&up, &reg);
    if let Err(e) = encoded {
        send_error(client.get_mut(), &e).await;
        return;
    }
    if client.get_mut().write_all(&hello).await.is_err() {
        return;
    }
    info!(role = %info.role, credential = %info.credential_id, tls = info.tls, "session started");

    let end = relay::run(
        client,
        up,
        &info,
        shared,
        control_rx,
        shutdown,
        (reg.pid, &reg.cancel, &reg.model),
    )
    .await;
    record.reason = ended(end);
}

/// Startup, authentication and the upstream login: the session as far as
/// it is set up before the relay, or `None` when it ended on the way (the
/// client has been told why when it could be).
async fn set_up(
    reader: FrameReader<Stream>,
    peer: SocketAddr,
    id: u64,
    shared: &Arc<Shared>,
    record: &mut ConnectionRecord<'_>,
) -> Option<(FrameReader<Stream>, SessionInfo, upstream::Upstream)> {
    let (mut reader, params) = match startup(reader, shared).await {
        Ok(Started::Session(r, p)) => {
            record.opened(peer, r.get_ref().is_tls()).await;
            (r, p)
        }
        Ok(Started::NeedsTls(mut reader, err)) => {
            // Audited like any connection, so plaintext attempts (a
            // misconfigured client, a downgrade) are visible.
            record.opened(peer, false).await;
            record.reason = err.message.clone();
            send_error(reader.get_mut(), &err).await;
            return None;
        }
        Ok(Started::Cancelled) | Ok(Started::Gone) => return None,
        Err((mut reader, err)) => {
            Metrics::inc(&shared.metrics.protocol_errors_total);
            warn!(error = %err, "startup rejected");
            if let Some(r) = reader.as_mut() {
                send_error(r.get_mut(), &err).await;
            }
            return None;
        }
    };
    match login(&mut reader, &params, id, peer, shared).await {
        Ok((info, up)) => Some((reader, info, up)),
        Err(err) => {
            record.reason = err.message.clone();
            send_error(reader.get_mut(), &err).await;
            None
        }
    }
}

/// The messages that tell the client it is in, and whether they encoded.
fn welcome(up: &upstream::Upstream, reg: &Registration<'_>) -> (BytesMut, Result<(), PgError>) {
    let mut hello = BytesMut::new();
    let encoded = protocol::put(&mut hello, &Authentication::Ok).and_then(|()| {
        for f in &up.startup_frames {
            hello.extend_from_slice(&f.bytes);
        }
        let key = BackendKeyData::new(reg.pid, SecretKey::I32(reg.key));
        protocol::put(&mut hello, &key)?;
        protocol::put(&mut hello, &ReadyForQuery::new(up.status))
    });
    (hello, encoded)
}

/// Why the session ended, for its `connection.closed` record (and the log).
fn ended(end: RelayEnd) -> String {
    let reason = match &end {
        RelayEnd::ClientTerminated => "client terminated".into(),
        RelayEnd::ClientClosed => "client closed the connection".into(),
        RelayEnd::UpstreamClosed => "upstream closed the connection".into(),
        RelayEnd::Fatal(e) => e.message.clone(),
        RelayEnd::Io(e) => format!("connection error: {e}"),
    };
    match end {
        RelayEnd::ClientTerminated | RelayEnd::ClientClosed => debug!("client closed"),
        RelayEnd::UpstreamClosed => info!("upstream closed the connection"),
        RelayEnd::Fatal(e) => info!(error = %e, "session ended"),
        RelayEnd::Io(e) => debug!(error = %e, "connection error"),
    }
    reason
}

/// Audits a connection that got past startup: `connection.opened` when it
/// does, `connection.closed` (with why) however it ends.
struct ConnectionRecord<'a> {
    shared: &'a Arc<Shared>,
    session: u64,
    opened: bool,
    identity: Option<String>,
    grant: Option<String>,
    reason: String,
}

impl ConnectionRecord<'_> {
    async fn opened(&mut self, peer: SocketAddr, tls: bool) {
        self.opened = true;
        let _ = self
            .shared
            .audit
            .enqueue(Event::ConnectionOpened {
                session: self.session,
                client: peer.to_string(),
                tls,
            })
            .await;
    }
}

impl Drop for ConnectionRecord<'_> {
    fn drop(&mut self) {
        if self.opened {
            self.shared.audit.enqueue_now(Event::ConnectionClosed {
                session: self.session,
                identity: self.identity.take(),
                grant: self.grant.take(),
                reason: std::mem::take(&mut self.reason),
            });
        }
    }
}

async fn send_error(stream: &mut Stream, err: &PgError) {
    let _ = stream.write_all(&err.to_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}
