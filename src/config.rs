//! `infraveil.toml`: where to listen, which PostgreSQL to protect, where secrets
//! come from, and the limits that keep one bad client from hurting others.
//!
//! Secrets (upstream passwords, the admin token, development credentials) are
//! never written in this file or in policies: each is a [`SecretSource`] naming
//! an environment variable or a file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("secret {what}: {message}")]
    Secret { what: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the PostgreSQL listener, e.g. `127.0.0.1:6432`.
    pub listen: SocketAddr,
    /// TLS for clients; without a certificate only plaintext connections
    /// are accepted.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Directory of `*.toml` policy files.
    #[serde(default = "default_policies_dir")]
    pub policies_dir: PathBuf,
    /// Where state lives (grants, approvals, audit log).
    pub data_dir: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub grants: GrantsConfig,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Where grants, approvals and the audit log are kept: `data_dir`
    /// (sled, one daemon) or a PostgreSQL control database several
    /// daemons share.
    #[serde(default)]
    pub state: StateConfig,
    /// Development credential source, used until grants are issued: each
    /// entry lets one identity log in with a secret read from env or file.
    #[serde(default)]
    pub dev_credentials: Vec<DevCredential>,
}

fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}

/// `[tls]`: the certificate clients see, and whether they must use it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; set together with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Refuse clients that do not negotiate TLS (`FATAL 28000` before any
    /// authentication). Default: on when a certificate is configured, since
    /// the grant secrets and every statement would otherwise cross the
    /// network in the clear at the client's choice.
    #[serde(default)]
    pub require: Option<bool>,
}

impl TlsConfig {
    /// A certificate and key, TLS required (the default with a certificate).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert: Some(cert.into()),
            key: Some(key.into()),
            require: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP to PostgreSQL (fine on loopback or a private link).
    #[default]
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS, certificate checked against `ca_file` and `server_name`.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the certificate; defaults to `host`.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Password of each upstream user the roles log in as.
    #[serde(default)]
    pub passwords: BTreeMap<String, SecretSource>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP API; off when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub token: Option<SecretSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// How clients reach the firewall, without user and password, e.g.
    /// `postgres://db.example.com:6432/app?sslmode=verify-full`. Issued grants
    /// return it with their identity and secret filled in. Defaults to the
    /// `listen` address (with `sslmode=require` when TLS is configured).
    #[serde(default)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How approvers reach the admin listener, for the links in approval
    /// messages, e.g. `https://veil.example.com`. Defaults to
    /// `http://<admin.listen>`.
    pub public_url: Option<String>,
    /// How long a request stays decidable; a `wait` session blocks at most
    /// this long, a `defer` approval must be used within it.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Slack-compatible incoming webhook; without it requests are logged
    /// (and decided with `veilctl approvals`).
    pub webhook: Option<WebhookConfig>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            public_url: None,
            timeout: Duration::from_secs(600),
            webhook: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The Ed25519 signing key (hex seed, mode 0600); default
    /// `<data_dir>/audit-ed25519.key`, generated on first start.
    pub key_file: Option<PathBuf>,
    /// Records of reads (and other events nobody waits for) are flushed
    /// within this; writes are durable before they commit (README, Durability).
    #[serde(deserialize_with = "duration")]
    pub read_window: Duration,
    /// A signed checkpoint every this many records...
    pub checkpoint_every: u64,
    /// ...or this long, whichever comes first.
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: None,
            read_window: Duration::from_millis(100),
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The webhook URL (a secret: whoever has it can post to the channel).
    pub url: SecretSource,
    /// Signs each POST (`X-Infraveil-Signature`) so receivers can check it.
    #[serde(default)]
    pub signing_secret: Option<SecretSource>,
    /// Per attempt.
    #[serde(default = "default_webhook_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Further attempts after the first, with doubling backoff.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_webhook_retries() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// sled under `data_dir`: one daemon.
    #[default]
    Sled,
    /// A PostgreSQL control database, shared by every instance.
    Postgres,
}

/// `[state]`: where the firewall's state lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub backend: StateBackend,
    /// `postgres://user:password@host:port/database` of the control
    /// database (a secret: it carries the password).
    #[serde(default)]
    pub url: Option<SecretSource>,
    /// This daemon's name in the shared state (its audit chain's name);
    /// defaults to the host name. Two live daemons may not share one.
    #[serde(default)]
    pub instance: Option<String>,
    /// TLS to the control database, as for `[upstream]`.
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// Audit records held in memory while the control database cannot
    /// take them (reads go on until it is full; writes stop at once).
    #[serde(default = "default_state_queue")]
    pub queue: usize,
}

fn default_state_queue() -> usize {
    10_000
}

impl StateConfig {
    /// The instance name: configured, or the host name.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .or_else(|| {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "infraveil".to_owned())
    }
}

/// Where a secret is read from: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretSource {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SecretSource {
            env: None,
            file: Some(path.into()),
        }
    }

    /// Read the secret; surrounding whitespace (a trailing newline) is dropped.
    pub fn read(&self, what: &str) -> Result<String, ConfigError> {
        let err = |message: String| ConfigError::Secret {
            what: what.to_owned(),
            message,
        };
        let value = match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| err(format!("environment variable {var} is not set")))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?,
            _ => return Err(err("set exactly one of `env` or `file`".into())),
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(err("is empty".into()));
        }
        Ok(value)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevCredential {
    pub identity: String,
    pub role: String,
    pub secret: SecretSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frontend message accepted; larger ones end the connection.
    pub max_message_bytes: usize,
    /// Time a client has from connecting to being authenticated.
    #[serde(deserialize_with = "duration")]
    pub auth_timeout: Duration,
    /// On SIGTERM, how long sessions may finish before they are closed.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// A client that accepts no bytes for this long is disconnected.
    #[serde(deserialize_with = "duration")]
    pub client_write_timeout: Duration,
    pub max_connections: usize,
    /// Clients that may be logging in at once (connected, not yet
    /// authenticated); more are refused until one finishes or times out.
    pub max_authenticating: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            auth_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(30),
            client_write_timeout: Duration::from_secs(300),
            max_connections: 1000,
            max_authenticating: 64,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Parse a duration such as `90s`, `15m`, `1h` or `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 90s, 15m, 1h"))
}

impl Config {
    /// Load and validate a config file. Relative paths are taken relative to
    /// the file's directory, so a config works from any working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.policies_dir);
        fix(&mut self.data_dir);
        if let Some(k) = &mut self.audit.key_file {
            fix(k);
        }
        if let Some(tls) = &mut self.tls {
            tls.cert.iter_mut().chain(tls.key.iter_mut()).for_each(fix);
        }
        if let Some(ca) = &mut self.upstream.ca_file {
            fix(ca);
        }
        if let Some(ca) = &mut self.state.ca_file {
            fix(ca);
        }
        let webhook = self
            .approvals
            .webhook
            .iter_mut()
            .flat_map(|w| std::iter::once(&mut w.url).chain(w.signing_secret.iter_mut()));
        let secrets = self
            .upstream
            .passwords
            .values_mut()
            .chain(self.admin.token.iter_mut())
            .chain(self.state.url.iter_mut())
            .chain(webhook)
            .chain(self.dev_credentials.iter_mut().map(|d| &mut d.secret));
        for s in secrets {
            if let Some(f) = &mut s.file {
                fix(f);
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_message_bytes must be at least 1024".into(),
            ));
        }
        if self.limits.max_authenticating == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_authenticating must be at least 1".into(),
            ));
        }
        if self.upstream.tls == UpstreamTlsMode::VerifyFull && self.upstream.ca_file.is_none() {
            return Err(ConfigError::Invalid(
                "upstream.tls = \"verify-full\" needs upstream.ca_file".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            match (&tls.cert, &tls.key, tls.require) {
                (Some(_), Some(_), _) | (None, None, None | Some(false)) => {}
                (None, None, Some(true)) => {
                    return Err(ConfigError::Invalid(
                        "tls.require = true needs tls.cert and tls.key: without a certificate no client can use TLS"
                            .into(),
                    ));
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "tls.cert and tls.key go together: set both, or neither".into(),
                    ));
                }
            }
        }
        if self.state.backend == StateBackend::Postgres {
            if self.state.url.is_none() {
                return Err(ConfigError::Invalid(
                    "state.backend = \"postgres\" needs state.url (e.g. url = { env = \"VEIL_STATE_URL\" })".into(),
                ));
            }
            if self.state.tls == UpstreamTlsMode::VerifyFull && self.state.ca_file.is_none() {
                return Err(ConfigError::Invalid(
                    "state.tls = \"verify-full\" needs state.ca_file".into(),
                ));
            }
            if let Some(name) = &self.state.instance
                && (name.is_empty()
                    || name.len() > 63
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(ConfigError::Invalid(format!(
                    "state.instance {name:?}: use 1 to 63 letters, digits, '-', '_' or '.'"
                )));
            }
        }
        self.database_url()?;
        if self.admin.listen.is_some() && self.admin.token.is_none() {
            return Err(ConfigError::Invalid(
                "admin.listen is set but admin.token is not: the admin API never runs without a token"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The certificate and key files clients are offered, if any.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        let tls = self.tls.as_ref()?;
        Some((tls.cert.as_deref()?, tls.key.as_deref()?))
    }

    /// Whether clients that do not negotiate TLS are refused: `tls.require`,
    /// by default whether a certificate is configured.
    pub fn tls_required(&self) -> bool {
        // `require = true` without a certificate fails validation; a config
        // built in code that skips it refuses every client rather than none.
        self.tls
            .as_ref()
            .and_then(|t| t.require)
            .unwrap_or(self.tls_files().is_some())
    }

    /// The URL clients connect with, without credentials (see
    /// [`GrantsConfig::database_url`]).
    pub fn database_url(&self) -> Result<url::Url, ConfigError> {
        let text = match &self.grants.database_url {
            Some(u) => u.clone(),
            None => {
                let host = match self.listen.ip() {
                    ip if ip.is_unspecified() => "localhost".to_owned(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                let tls = if self.tls_files().is_some() {
                    "?sslmode=require"
                } else {
                    ""
                };
                format!("postgres://{host}:{}/postgres{tls}", self.listen.port())
            }
        };
        let bad = |m: &str| ConfigError::Invalid(format!("grants.database_url {text:?}: {m}"));
        let url = url::Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("must start with postgres:// or postgresql://"));
        }
        if url.host().is_none() || url.cannot_be_a_base() {
            return Err(bad("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain a user or password"));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:6432"
            data_dir = "/tmp/x"
            [upstream]
            host = "127.0.0.1"
            port = 5432
            "#,
        )
        .unwrap();
        assert_eq!(c.limits.max_message_bytes, 64 * 1024 * 1024);
        assert_eq!(c.upstream.tls, UpstreamTlsMode::Disable);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = toml::from_str::<Config>(
            r#"
            listen = "127.0.0.1:6432"
            data_dir = "/tmp/x"
            lsiten = "oops"
            [upstream]
            host = "h"
            port = 1
            "#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("lsiten"), "{e}");
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let base = r#"
            listen = "127.0.0.1:6432"
            data_dir = "/tmp/x"
            [upstream]
            host = "127.0.0.1"
            port = 5432
            "#;
        let c: Config =
            toml::from_str(&format!("{base}\n{text}")).map_err(|e| ConfigError::Parse {
                path: "t.toml".into(),
                message: e.to_string(),
            })?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn tls_require_defaults_to_whether_a_certificate_is_configured() {
        let cert = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let cases = [
            ("", false),
            (cert, true),
            (&format!("{cert}require = true"), true),
            (&format!("{cert}require = false"), false),
            ("[tls]\nrequire = false", false),
        ];
        for (text, required) in cases {
            let c = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.tls_required(), required, "{text}");
        }
        let plain = parse("").unwrap();
        assert!(!plain.database_url().unwrap().as_str().contains("sslmode"));
        let tls = parse(cert).unwrap();
        assert!(
            tls.database_url()
                .unwrap()
                .as_str()
                .ends_with("?sslmode=require")
        );
    }

    #[test]
    fn tls_require_without_a_certificate_is_an_error() {
        let e = parse("[tls]\nrequire = true").unwrap_err().to_string();
        assert!(
            e.contains("tls.require = true needs tls.cert and tls.key"),
            "{e}"
        );
        let e = parse("[tls]\ncert = \"c.pem\"").unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secret_sources() {
        let s = SecretSource {
            env: None,
            file: None,
        };
        assert!(s.read("x").is_err());
        let dir = std::env::temp_dir().join(format!("veil-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "hunter2\n").unwrap();
        assert_eq!(SecretSource::file(&f).read("x").unwrap(), "hunter2");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
