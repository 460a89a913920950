//! One client connection, as an explicit state machine:
//! startup (TLS / GSS negotiation, cancel requests, the `[tls] require`
//! refusal of plaintext clients) → authenticating →
//! connecting upstream → relaying (see [`super::relay`]) → closed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::relay::{self, RelayEnd};
use crate::audit::Event;
use crate::auth;
use crate::metrics::Metrics;
use crate::net::stream::Stream;
use crate::policy::inspect::SessionInfo;
use crate::protocol::startup::{
    MAX_STARTUP_PACKET, StartupPacket, StartupParams, parse_startup_packet,
};
use crate::protocol::{self, FrameReader, PgError};
use crate::shutdown::Shutdown;
use crate::upstream;

/// Startup parameters forwarded to PostgreSQL. Anything else is refused:
/// `options` could carry `-c role=...`, `replication` opens another protocol,
/// and a non-UTF8 `client_encoding` would let PostgreSQL read a statement
/// differently from the firewall.
const FORWARDED_PARAMS: &[&str] = &[
    "database",
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "standard_conforming_strings",
];

/// What the startup phase produced.
enum Started {
    Session(FrameReader<Stream>, StartupParams),
    /// A startup packet over plain TCP while `[tls] require` is on: refused
    /// with this error, in plain text, before any authentication.
    NeedsTls(FrameReader<Stream>, PgError),
    /// A cancel request was handled; the connection is done.
    Cancelled,
    /// The client went away before saying anything useful.
    Gone,
}

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
    let setup = tokio::time::timeout(shared.limits.auth_timeout, async {
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
    })
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
    let reg = shared.registry.register(
        up.pid,
        up.secret_key,
        &info.credential_id,
        control_tx,
        Arc::new(super::state::SessionState::new(info.id, &info.identity)),
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
    let mut hello = BytesMut::new();
    let encoded = protocol::put(&mut hello, &Authentication::Ok).and_then(|()| {
        for f in &up.startup_frames {
            hello.extend_from_slice(&f.bytes);
        }
        let key = BackendKeyData::new(reg.pid, SecretKey::I32(reg.key));
        protocol::put(&mut hello, &key)?;
        protocol::put(&mut hello, &ReadyForQuery::new(up.status))
    });
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
    record.reason = match &end {
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

type StartupError = (Option<FrameReader<Stream>>, PgError);

/// Negotiate TLS / GSS and read the startup packet, or serve a cancel request.
async fn startup(
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

/// Check the startup parameters, authenticate, and log in upstream.
async fn login(
    reader: &mut FrameReader<Stream>,
    params: &StartupParams,
    id: u64,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<(SessionInfo, upstream::Upstream), PgError> {
    let Some(user) = params.user().map(str::to_owned) else {
        return Err(PgError::no_user_name());
    };
    tracing::Span::current().record("identity", user.as_str());
    let forwarded = vet_params(params, &user)?;

    // Protocol 3.2 and `_pq_.` extensions: we speak 3.0 and say so.
    let extensions: Vec<String> = params
        .params
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    if params.minor_version > 0 || !extensions.is_empty() {
        let mut buf = BytesMut::new();
        protocol::put(&mut buf, &NegotiateProtocolVersion::new(0, extensions))?;
        reader
            .get_mut()
            .write_all(&buf)
            .await
            .map_err(|_| PgError::protocol_violation("connection lost"))?;
    }

    let credential = match auth::authenticate(reader, &shared.credentials, &user).await {
        Ok(c) => {
            // A failed log refuses every statement of this session later.
            let _ = shared
                .audit
                .enqueue(Event::AuthSucceeded {
                    session: id,
                    identity: c.identity.clone(),
                    role: c.role.clone(),
                    grant: c.id.clone(),
                })
                .await;
            c
        }
        Err(e) => {
            let _ = shared
                .audit
                .enqueue(Event::AuthFailed {
                    session: id,
                    user: user.clone(),
                    reason: e.to_string(),
                })
                .await;
            Metrics::inc(&shared.metrics.auth_failures_total);
            // The log (not the client) says which: unknown identity, wrong
            // secret, or a grant that expired or was revoked.
            info!(reason = %e, "authentication failed");
            return Err(e.to_client_error(&user));
        }
    };

    let policies = shared.policies();
    if credential.kind == auth::CredentialKind::Grant
        && let Err(why) =
            crate::grants::still_permitted(&policies, &credential.identity, &credential.role)
    {
        warn!(grant = %credential.id, %why, "grant no longer permitted by policy");
        return Err(PgError::grant_not_valid(&credential.id, why));
    }
    let Some(role) = policies.role(&credential.role) else {
        warn!(role = %credential.role, "credential names a role no policy defines");
        return Err(PgError::role_not_in_policy(&credential.role));
    };
    let upstream_user = role.upstream_user.clone();
    drop(policies);

    let mut up = shared
        .upstream
        .connect(&upstream_user, &forwarded)
        .await
        .map_err(|e| {
            if let upstream::UpstreamError::NoSuchDatabase(m) = &e {
                return PgError::no_such_database(m.clone());
            }
            Metrics::inc(&shared.metrics.upstream_errors_total);
            warn!(error = %e, "upstream connection failed");
            PgError::upstream_unreachable(e.client_detail())
        })?;
    // The names user-defined objects could take over, for this database and
    // login; fail closed if they cannot be read.
    let database = forwarded
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("database"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let objects = shared
        .catalogs
        .objects(&mut up, &database, &upstream_user)
        .await
        .map_err(|e| {
            warn!(error = %e, "reading the upstream's user-defined objects failed");
            PgError::upstream_catalog_unreadable()
        })?;

    let info = SessionInfo {
        id,
        identity: credential.identity,
        role: credential.role,
        credential_id: credential.id,
        client_addr: peer,
        tls: reader.get_mut().is_tls(),
        database,
        objects,
    };
    Ok((info, up))
}

/// The startup parameters to pass upstream, or why the set is refused.
fn vet_params(params: &StartupParams, user: &str) -> Result<Vec<(String, String)>, PgError> {
    let refuse = |msg: String| Err(PgError::startup_parameter_refused(msg));
    let mut out = Vec::new();
    let mut has_db = false;
    let mut fallback_name = None;
    for (k, v) in &params.params {
        let key = k.to_ascii_lowercase();
        match key.as_str() {
            "user" => continue,
            _ if key.starts_with("_pq_.") => continue,
            "replication"
                if matches!(
                    v.to_ascii_lowercase().as_str(),
                    "false" | "0" | "off" | "no"
                ) =>
            {
                continue;
            }
            // libpq's meaning, which PostgreSQL itself does not take as a
            // startup parameter (it ends the login, 42704): the application
            // name when the client gives none.
            "fallback_application_name" => {
                fallback_name = Some(v.clone());
                continue;
            }
            "options" if v.trim().is_empty() => continue,
            "options" => {
                return refuse(
                    "startup option \"options\" is not allowed through infraveil; use SET after connecting"
                        .into(),
                );
            }
            "client_encoding" if !crate::classify::names_utf8(v) => {
                return refuse(format!(
                    "client_encoding \"{v}\" is not supported: infraveil inspects statements as UTF8"
                ));
            }
            "standard_conforming_strings" if !pg_bool_true(v) => {
                return refuse("standard_conforming_strings must be on through infraveil".into());
            }
            // The classifier resolves names on the default path; a start-up
            // path must be one `SET search_path` could use unreviewed.
            "search_path" => {
                let (class, why) = crate::classify::setting("search_path", v);
                if class != crate::classify::Class::Read {
                    return refuse(format!(
                        "startup parameter search_path \"{v}\" is not allowed through infraveil: {why}"
                    ));
                }
                out.push((k.clone(), v.clone()));
            }
            _ if FORWARDED_PARAMS.contains(&key.as_str()) => {
                has_db |= key == "database";
                out.push((k.clone(), v.clone()));
            }
            _ => {
                return refuse(format!(
                    "startup parameter \"{k}\" is not allowed through infraveil; use SET after connecting"
                ));
            }
        }
    }
    if !has_db {
        // PostgreSQL's default: the database named like the user.
        out.push(("database".into(), user.to_owned()));
    }
    if let Some(name) = fallback_name
        && !out
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("application_name"))
    {
        out.push(("application_name".into(), name));
    }
    Ok(out)
}

/// Whether PostgreSQL's boolean parser (`parse_bool`) reads `v` as true:
/// `on`, `1`, or any prefix of `true` or `yes`, in any case.
fn pg_bool_true(v: &str) -> bool {
    let v = v.to_ascii_lowercase();
    !v.is_empty() && (v == "on" || v == "1" || "true".starts_with(&v) || "yes".starts_with(&v))
}

async fn send_error(stream: &mut Stream, err: &PgError) {
    let _ = stream.write_all(&err.to_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            minor_version: 0,
            params: p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn forwards_known_params_and_defaults_database() {
        let out = vet_params(
            &params(&[
                ("user", "a"),
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
            ]),
            "a",
        )
        .unwrap();
        assert!(out.contains(&("database".into(), "a".into())));
        assert!(out.contains(&("application_name".into(), "psql".into())));
        assert!(!out.iter().any(|(k, _)| k == "user"));
    }

    /// Start-up parameters as each driver sends them by default (from their
    /// sources; `tests/clients/` connects the drivers themselves).
    #[test]
    fn forwards_what_real_drivers_send() {
        let drivers: &[(&str, &[(&str, &str)])] = &[
            ("asyncpg", &[("client_encoding", "'utf-8'")]),
            (
                "pgjdbc",
                &[
                    ("client_encoding", "UTF8"),
                    ("DateStyle", "ISO"),
                    ("TimeZone", "Europe/Berlin"),
                    ("extra_float_digits", "3"),
                    ("application_name", "PostgreSQL JDBC Driver"),
                ],
            ),
            (
                "libpq",
                &[("application_name", "psql"), ("client_encoding", "UTF8")],
            ),
            (
                "node-postgres",
                &[
                    ("client_encoding", "utf8"),
                    ("fallback_application_name", "node-postgres"),
                    ("statement_timeout", "5000"),
                    ("lock_timeout", "1000"),
                    ("idle_in_transaction_session_timeout", "60000"),
                ],
            ),
            (
                "sqlx",
                &[
                    ("DateStyle", "ISO, MDY"),
                    ("client_encoding", "UTF8"),
                    ("TimeZone", "UTC"),
                    ("extra_float_digits", "2"),
                ],
            ),
            ("old pgjdbc", &[("client_encoding", "UNICODE")]),
        ];
        for (driver, sent) in drivers {
            let mut p = vec![("user", "a"), ("database", "app")];
            p.extend_from_slice(sent);
            let out = vet_params(&params(&p), "a").unwrap_or_else(|e| panic!("{driver}: {e:?}"));
            for (k, v) in sent.iter() {
                // libpq's fallback becomes the application name.
                let k = if *k == "fallback_application_name" {
                    "application_name"
                } else {
                    k
                };
                assert!(
                    out.contains(&(k.to_string(), v.to_string())),
                    "{driver}: {k} forwarded as sent"
                );
            }
        }
        // A fallback never overrides the name the client gave.
        let p = [
            ("user", "a"),
            ("fallback_application_name", "lib"),
            ("application_name", "app"),
        ];
        let out = vet_params(&params(&p), "a").unwrap();
        assert!(out.contains(&("application_name".into(), "app".into())));
        assert!(!out.iter().any(|(_, v)| v == "lib"), "{out:?}");
    }

    #[test]
    fn standard_conforming_strings_on_is_read_as_postgres_reads_booleans() {
        for on in ["on", "ON", "true", "t", "TR", "yes", "y", "1"] {
            assert!(pg_bool_true(on), "{on}");
        }
        for off in [
            "off", "o", "false", "f", "no", "0", "", "onn", "truee", " on",
        ] {
            assert!(!pg_bool_true(off), "{off}");
        }
    }

    #[test]
    fn refuses_params_that_could_escape_inspection() {
        for bad in [
            ("options", "-c role=postgres"),
            ("client_encoding", "SJIS"),
            ("client_encoding", "'utf-16'"),
            ("client_encoding", "sql_ascii"),
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("standard_conforming_strings", "off"),
            ("replication", "database"),
        ] {
            let e = vet_params(&params(&[("user", "a"), bad]), "a").unwrap_err();
            assert_eq!(e.code, crate::protocol::sqlstate::FEATURE_NOT_SUPPORTED, "{bad:?}");
        }
    }
}
