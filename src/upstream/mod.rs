//! The server side of the relay: one connection to PostgreSQL per client
//! session, logged in as the upstream user of the session's role.

use std::sync::Arc;

use bytes::BytesMut;
use pgwire::api::auth::sasl::scram::ScramClientAuth;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, Password, PasswordMessageFamily, SASLInitialResponse,
    SASLResponse, SecretKey, SslRequest, Startup,
};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::UpstreamConfig;
use crate::net::stream::Stream;
use crate::protocol::{ErrorFields, Frame, FrameReader, sqlstate};

pub mod plan;
mod query;

pub use query::{Param, Rows};

/// Backend messages from PostgreSQL are trusted but still bounded.
pub const MAX_BACKEND_MESSAGE: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream PostgreSQL at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("upstream PostgreSQL refused TLS")]
    TlsRefused,
    #[error("TLS handshake with upstream failed: {0}")]
    Tls(String),
    #[error("upstream login as {user:?} failed: {message}")]
    Login { user: String, message: String },
    /// The database the client asked for does not exist upstream: the
    /// client's own mistake, reported as PostgreSQL reports it.
    #[error("{0}")]
    NoSuchDatabase(String),
    #[error("upstream asked for unsupported authentication ({0})")]
    UnsupportedAuth(String),
    #[error("no password configured for upstream user {0:?} (upstream.passwords)")]
    NoPassword(String),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Query(String),
    /// The upstream reports a setting under which it would read statements
    /// differently from the classifier (a database or role default, say).
    #[error("upstream PostgreSQL reports {name} = {value:?}; infraveil requires {required}")]
    UnsafeSetting {
        name: String,
        value: String,
        required: &'static str,
    },
    #[error("upstream I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl UpstreamError {
    /// What the client is told: the kind of failure, without the upstream's
    /// address, user names or messages (those go to the log).
    pub fn client_detail(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "the upstream database is unreachable",
            UpstreamError::TlsRefused | UpstreamError::Tls(_) => {
                "TLS to the upstream database failed"
            }
            UpstreamError::NoSuchDatabase(_) => "the database does not exist",
            UpstreamError::Login { .. }
            | UpstreamError::UnsupportedAuth(_)
            | UpstreamError::NoPassword(_) => {
                "the firewall could not log in to the upstream database"
            }
            UpstreamError::Protocol(_) | UpstreamError::Io(_) | UpstreamError::Query(_) => {
                "the upstream connection failed during startup"
            }
            UpstreamError::UnsafeSetting { .. } => {
                "the upstream database reads SQL under settings infraveil cannot inspect (standard_conforming_strings must be on, client_encoding UTF8)"
            }
        }
    }
}

/// A `ParameterStatus` PostgreSQL sends (at start-up, or when a setting
/// changes) that would make it read the next statements differently from
/// the classifier, which parses as PostgreSQL does with
/// `standard_conforming_strings` on and UTF-8 text. Whatever changed it (a
/// database default, a rewrite rule, a function), the session cannot go on.
pub fn unsafe_parameter(frame: &Frame) -> Option<UpstreamError> {
    let body = frame.body();
    let mut parts = body.split(|&b| b == 0);
    let name = String::from_utf8_lossy(parts.next()?);
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let required = match name.as_ref() {
        "standard_conforming_strings" if value != "on" => "on",
        // PostgreSQL reports the canonical `UTF8`, except that it echoes a
        // client's exact `UNICODE` (kept for old JDBC drivers).
        "client_encoding" if !crate::classify::names_utf8(&value) => "UTF8",
        _ => return None,
    };
    Some(UpstreamError::UnsafeSetting {
        name: name.into_owned(),
        value: value.into_owned(),
        required,
    })
}

impl From<pgwire::error::PgWireError> for UpstreamError {
    fn from(e: pgwire::error::PgWireError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

impl From<pgwire::error::PgWireClientError> for UpstreamError {
    fn from(e: pgwire::error::PgWireClientError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// How to reach and log in to PostgreSQL; shared by all sessions.
pub struct UpstreamConnector {
    pub config: UpstreamConfig,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Password per upstream user, read once at start-up.
    pub passwords: std::collections::HashMap<String, String>,
}

/// A logged-in upstream connection, ready for queries.
pub struct Upstream {
    pub reader: FrameReader<Stream>,
    /// `ParameterStatus` and `NoticeResponse` frames to pass to the client.
    pub startup_frames: Vec<Frame>,
    pub pid: i32,
    pub secret_key: i32,
    /// Transaction status of the first `ReadyForQuery`.
    pub status: TransactionStatus,
}

impl UpstreamConnector {
    fn addr(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// Open a TCP (and, if configured, TLS) connection to PostgreSQL.
    pub async fn open(&self) -> Result<Stream, UpstreamError> {
        let addr = self.addr();
        let connect = TcpStream::connect(&addr);
        let tcp = match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(UpstreamError::Connect {
                    addr,
                    message: e.to_string(),
                });
            }
            Err(_) => {
                return Err(UpstreamError::Connect {
                    addr,
                    message: "connection timed out".into(),
                });
            }
        };
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        SslRequest::new().encode(&mut req)?;
        tcp.write_all(&req).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(UpstreamError::TlsRefused);
        }
        let name = self
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| self.config.host.clone());
        let server_name = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        Ok(Stream::ClientTls(Box::new(tls)))
    }

    /// Connect and log in as `user`, passing the client's vetted parameters.
    pub async fn connect(
        &self,
        user: &str,
        params: &[(String, String)],
    ) -> Result<Upstream, UpstreamError> {
        let mut stream = self.open().await?;
        let mut startup = Startup::new();
        startup.parameters.insert("user".into(), user.into());
        for (k, v) in params {
            startup.parameters.insert(k.clone(), v.clone());
        }
        let mut buf = BytesMut::new();
        startup.encode(&mut buf)?;
        stream.write_all(&buf).await?;

        let mut reader = FrameReader::new(stream, MAX_BACKEND_MESSAGE);
        self.login(&mut reader, user).await?;

        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        let mut startup_frames = Vec::new();
        let mut key = None;
        loop {
            let frame = next(&mut reader).await?;
            match frame.tag() {
                b'S' => {
                    if let Some(e) = unsafe_parameter(&frame) {
                        return Err(e);
                    }
                    startup_frames.push(frame);
                }
                b'N' => startup_frames.push(frame),
                b'K' => {
                    let mut b = frame.bytes;
                    let k = BackendKeyData::decode(&mut b, &ctx)
                        .ok()
                        .flatten()
                        .and_then(|k| k.secret_key.as_i32().map(|s| (k.pid, s)))
                        .ok_or_else(|| UpstreamError::Protocol("bad BackendKeyData".into()))?;
                    key = Some(k);
                }
                b'Z' => {
                    let mut b = frame.bytes;
                    let status = ReadyForQuery::decode(&mut b, &ctx)?
                        .ok_or_else(|| UpstreamError::Protocol("truncated ReadyForQuery".into()))?
                        .status;
                    let (pid, secret_key) = key.unwrap_or((0, 0));
                    return Ok(Upstream {
                        reader,
                        startup_frames,
                        pid,
                        secret_key,
                        status,
                    });
                }
                b'E' => return Err(login_error(user, &frame)),
                t => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        t as char
                    )));
                }
            }
        }
    }

    async fn login(
        &self,
        reader: &mut FrameReader<Stream>,
        user: &str,
    ) -> Result<(), UpstreamError> {
        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        let password = || {
            self.passwords
                .get(user)
                .cloned()
                .ok_or_else(|| UpstreamError::NoPassword(user.to_owned()))
        };
        let mut scram = None;
        let mut scram_final = None;
        loop {
            let frame = next(reader).await?;
            match frame.tag() {
                b'E' => return Err(login_error(user, &frame)),
                b'R' => {}
                t => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message {:?} during authentication",
                        t as char
                    )));
                }
            }
            let mut b = frame.bytes;
            let auth = Authentication::decode(&mut b, &ctx)?
                .ok_or_else(|| UpstreamError::Protocol("truncated authentication".into()))?;
            let reply = match auth {
                Authentication::Ok => return Ok(()),
                Authentication::CleartextPassword => {
                    PasswordMessageFamily::Password(Password::new(password()?))
                }
                Authentication::MD5Password(salt) => {
                    let pw = password()?;
                    let inner = format!("{:x}", md5_digest(format!("{pw}{user}").as_bytes()));
                    let mut outer = inner.into_bytes();
                    outer.extend_from_slice(&salt);
                    let hashed = format!("md5{:x}", md5_digest(&outer));
                    PasswordMessageFamily::Password(Password::new(hashed))
                }
                Authentication::SASL(mechs) => {
                    if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(UpstreamError::UnsupportedAuth(mechs.join(", ")));
                    }
                    let client = ScramClientAuth::new(user.to_owned(), password()?);
                    let (first, waiting) = client.build_client_first()?;
                    scram = Some(waiting);
                    PasswordMessageFamily::SASLInitialResponse(SASLInitialResponse::new(
                        "SCRAM-SHA-256".into(),
                        Some(first.into_bytes().into()),
                    ))
                }
                Authentication::SASLContinue(data) => {
                    let waiting = scram.take().ok_or_else(|| {
                        UpstreamError::Protocol("SASLContinue out of order".into())
                    })?;
                    let (fin, waiting_final) = waiting.build_client_final(&data)?;
                    scram_final = Some(waiting_final);
                    PasswordMessageFamily::SASLResponse(SASLResponse::new(fin.into_bytes().into()))
                }
                Authentication::SASLFinal(data) => {
                    let waiting = scram_final
                        .take()
                        .ok_or_else(|| UpstreamError::Protocol("SASLFinal out of order".into()))?;
                    // Verifying the server signature proves the upstream knows
                    // the password too: no impostor upstream.
                    waiting
                        .verify_server_final(&data)
                        .map_err(|e| UpstreamError::Login {
                            user: user.to_owned(),
                            message: format!("server signature check failed: {e}"),
                        })?;
                    continue;
                }
                other => return Err(UpstreamError::UnsupportedAuth(format!("{other:?}"))),
            };
            let mut out = BytesMut::new();
            reply.encode(&mut out)?;
            reader.get_mut().write_all(&out).await?;
            reader.get_mut().flush().await?;
        }
    }
}

fn md5_digest(data: &[u8]) -> md5::Digest {
    md5::compute(data)
}

pub(crate) async fn next(reader: &mut FrameReader<Stream>) -> Result<Frame, UpstreamError> {
    match reader.next().await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(UpstreamError::Protocol(
            "upstream closed the connection during startup".into(),
        )),
        Err(e) => Err(UpstreamError::Protocol(e.to_string())),
    }
}

fn login_error(user: &str, frame: &Frame) -> UpstreamError {
    let fields = ErrorFields::decode(&frame.bytes);
    let fields = fields.as_ref();
    let code = fields.and_then(|f| f.code());
    let message = fields.and_then(|f| f.message());
    let message = match (code, message) {
        (Some(sqlstate::INVALID_CATALOG_NAME), Some(m)) => {
            return UpstreamError::NoSuchDatabase(m.to_owned());
        }
        (Some(code), Some(m)) => format!("{m} (SQLSTATE {code})"),
        (_, Some(m)) => m.to_owned(),
        _ => "unknown error".into(),
    };
    UpstreamError::Login {
        user: user.to_owned(),
        message,
    }
}

/// Send a `CancelRequest` for the upstream backend `pid`/`key`.
pub async fn send_cancel(
    connector: &UpstreamConnector,
    pid: i32,
    key: i32,
) -> Result<(), UpstreamError> {
    let mut stream = connector.open().await?;
    let mut buf = BytesMut::new();
    CancelRequest::new(pid, SecretKey::I32(key)).encode(&mut buf)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    // PostgreSQL closes the connection after a cancel; wait for that so the
    // request is surely delivered before we drop the socket.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut sink)).await;
    Ok(())
}
