//! The MCP server's one connection to the firewall, as an ordinary client:
//! the URL's user is the identity and its password the grant secret; TLS
//! as the URL's `sslmode` and `sslrootcert` say (libpq's meanings). A lost
//! connection is made again before the next statement, never in the middle
//! of one (a statement whose connection died may or may not have run, and
//! is not re-sent). When the firewall ended the session because the grant
//! expired or was revoked, that is what the model is told.

use std::sync::{Arc, Mutex};

use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::McpError;
use super::failure::Failure;
use crate::config::{UpstreamConfig, UpstreamTlsMode};

/// Where and as whom to connect.
pub struct Target {
    pub config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    pub identity: String,
    pub secret: String,
    pub database: String,
}

impl Target {
    /// `postgres://identity:secret@host:port/db?sslmode=...&sslrootcert=...`
    pub fn from_url(text: &str) -> Result<Target, McpError> {
        let bad = |why: &str| McpError::Url(why.to_owned());
        let url = url::Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| bad("the user or password is not valid percent-encoded UTF-8"))
        };
        let identity = decode(url.username())?;
        let secret = decode(url.password().unwrap_or(""))?;
        if identity.is_empty() || secret.is_empty() {
            return Err(bad(
                "the URL must carry the identity as user and the grant secret as password",
            ));
        }
        let host = url.host_str().unwrap_or("localhost").to_owned();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(5432);
        let path = decode(url.path().trim_start_matches('/'))?;
        let database = if path.is_empty() {
            identity.clone()
        } else {
            path
        };
        let (mut sslmode, mut rootcert, mut app) = ("prefer".to_owned(), None, None);
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" => sslmode = v.into_owned(),
                "sslrootcert" => rootcert = Some(std::path::PathBuf::from(v.into_owned())),
                "application_name" => app = Some(v.into_owned()),
                _ => {}
            }
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host)
            .port(port)
            .user(&identity)
            .password(&secret)
            .dbname(&database)
            .application_name(app.as_deref().unwrap_or("infraveil-mcp"))
            .connect_timeout(std::time::Duration::from_secs(10));
        let (mode, tls) = match sslmode.as_str() {
            "disable" => (SslMode::Disable, None),
            // libpq: `require` with a root certificate verifies it.
            "allow" | "prefer" | "require" if rootcert.is_none() => {
                (ssl_mode(&sslmode), Some(UpstreamTlsMode::Require))
            }
            "allow" | "prefer" | "require" | "verify-ca" | "verify-full" => {
                if rootcert.is_none() {
                    return Err(bad("sslmode verify-ca/verify-full needs sslrootcert=FILE"));
                }
                (ssl_mode(&sslmode), Some(UpstreamTlsMode::VerifyFull))
            }
            other => return Err(bad(&format!("unknown sslmode {other:?}"))),
        };
        config.ssl_mode(mode);
        let tls = match tls {
            None => None,
            Some(tls) => {
                let up = UpstreamConfig {
                    host: host.clone(),
                    port,
                    tls,
                    ca_file: rootcert,
                    server_name: None,
                    connect_timeout: std::time::Duration::from_secs(10),
                    passwords: Default::default(),
                };
                crate::net::tls::upstream_config(&up)
                    .map_err(|e| bad(&format!("TLS: {e}")))?
                    .map(|c| MakeRustlsConnect::new((*c).clone()))
            }
        };
        Ok(Target {
            config,
            tls,
            identity,
            secret,
            database,
        })
    }
}

fn ssl_mode(s: &str) -> SslMode {
    match s {
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The connection, made again when lost.
pub struct Conn {
    target: Target,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// Why the firewall ended the last connection, if it said (FATAL).
    ended: Arc<Mutex<Option<tokio_postgres::error::DbError>>>,
}

impl Conn {
    pub fn new(target: Target) -> Conn {
        Conn {
            target,
            client: tokio::sync::Mutex::new(None),
            ended: Arc::default(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A live client, connecting (again) if there is none.
    pub async fn client(&self) -> Result<Arc<Client>, Failure> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let had = slot.take().is_some();
        let client = match self.connect().await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(Failure::connect(&e, ended.as_ref(), had));
            }
        };
        if had {
            tracing::info!("reconnected to the firewall");
        }
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let ended = self.ended.clone();
        let watch = move |r: Result<(), tokio_postgres::Error>| {
            if let Err(e) = r {
                match e.as_db_error() {
                    Some(db) => {
                        tracing::warn!(
                            sqlstate = db.code().code(),
                            message = db.message(),
                            "the firewall ended the connection"
                        );
                        *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(db.clone());
                    }
                    None => tracing::warn!(error = %e, "the firewall connection ended"),
                }
            }
        };
        match &self.target.tls {
            Some(tls) => {
                let (c, conn) = self.target.config.connect(tls.clone()).await?;
                tokio::spawn(async move {
                    // Why it ended is recorded before the connection is
                    // dropped, which is when the client sees it closed.
                    let mut conn = Box::pin(conn);
                    watch((&mut conn).await);
                });
                Ok(c)
            }
            None => {
                let (c, conn) = self.target.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let mut conn = Box::pin(conn);
                    watch((&mut conn).await);
                });
                Ok(c)
            }
        }
    }

    /// Cancel what `client` is running (a CancelRequest, which the
    /// firewall relays to PostgreSQL).
    pub async fn cancel(&self, client: &Client) {
        let token = client.cancel_token();
        let r = match &self.target.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(tokio_postgres::NoTls).await,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not cancel the running statement");
        }
    }

    /// Why the firewall ended the last session, if it did.
    pub fn ended(&self) -> Option<tokio_postgres::error::DbError> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_identity_secret_and_tls() {
        crate::net::tls::install_default_provider();
        let t = Target::from_url("postgres://ops-agent:s%2Fx@127.0.0.1:6432/app?sslmode=disable")
            .unwrap();
        assert_eq!(t.identity, "ops-agent");
        assert_eq!(t.secret, "s/x");
        assert_eq!(t.database, "app");
        assert!(t.tls.is_none());
        let t = Target::from_url("postgresql://a:b@localhost/app?sslmode=require").unwrap();
        assert!(t.tls.is_some());
        assert!(Target::from_url("postgres://a@localhost/app").is_err());
        assert!(Target::from_url("postgres://a:b@localhost/app?sslmode=verify-full").is_err());
        assert!(Target::from_url("postgres://a:b@localhost/app?sslmode=bogus").is_err());
        assert!(Target::from_url("mysql://a:b@localhost/app").is_err());
    }
}
