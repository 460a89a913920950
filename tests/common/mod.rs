//! Test harness: one throwaway PostgreSQL cluster per test binary (a
//! database per test for isolation), the firewall started in-process in front
//! of it, and a raw protocol client for byte-level cases.
#![allow(dead_code)]

pub mod child;
pub mod drivers;
pub mod state;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use infraveil::config::{Config, DevCredential, Limits, SecretSource, TlsConfig, UpstreamConfig};
use infraveil::daemon::Running;
use infraveil::policy::inspect::{AllowAll, Inspector};
use infraveil::protocol::{ErrorFields, Frame, FrameReader};
use infraveil::sandbox::{Cluster, ClusterOptions};
use pgwire::messages::Message;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::{Bind, Execute, Parse, Sync};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::{
    PasswordMessageFamily, SASLInitialResponse, SASLResponse, Startup,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub const PASSWORD: &str = "correct-horse-battery-staple";

/// The shared cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::start(&ClusterOptions {
            sample_schema: true,
            unsafe_fast: true,
            reap_on_exit: true,
            ..Default::default()
        })
        .expect("start the test PostgreSQL cluster")
    })
}

/// A fresh database owned by `app_owner`, named after the test.
pub fn fresh_db(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let db = format!("t_{}_{}", name, N.fetch_add(1, Ordering::Relaxed));
    cluster()
        .psql(
            "postgres",
            &format!("CREATE DATABASE {db} OWNER app_owner;"),
        )
        .expect("create database");
    db
}

/// [`fresh_db`], set up by `sql` (run as the cluster superuser).
pub fn fresh_db_with(name: &str, sql: &str) -> String {
    let db = fresh_db(name);
    cluster().psql(&db, sql).expect("set up the database");
    db
}

pub fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "infraveil-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct ProxyOptions {
    pub inspector: Arc<dyn Inspector>,
    pub tls: bool,
    /// `[tls] require`; `None` keeps the default (required with a cert).
    pub tls_require: Option<bool>,
    pub limits: Limits,
    pub upstream_port: Option<u16>,
    /// Upstream TLS mode and CA file.
    pub upstream_tls: Option<(infraveil::config::UpstreamTlsMode, Option<PathBuf>)>,
    /// Defaults to the repository's `policies/`.
    pub policies_dir: Option<PathBuf>,
    /// Run the admin API (token [`ADMIN_TOKEN`]).
    pub admin: bool,
    /// Keep state here (it outlives the proxy) instead of a scratch dir.
    pub data_dir: Option<PathBuf>,
    /// Give every test identity a standing [`PASSWORD`] (off: grants only).
    pub dev_credentials: bool,
    pub approvals: infraveil::config::ApprovalsConfig,
    /// Turn on to make the state store's writes fail (a full disk).
    pub store_faults: infraveil::store::Faults,
}

impl ProxyOptions {
    /// Default options, enforcing the example `policies/`.
    pub fn enforcing() -> ProxyOptions {
        ProxyOptions {
            inspector: Arc::new(infraveil::policy::PolicyInspector::empty()),
            ..ProxyOptions::default()
        }
    }

    /// Enforcing, with the admin API and no dev credentials: identities get
    /// in only with grants.
    pub fn with_grants() -> ProxyOptions {
        ProxyOptions {
            admin: true,
            dev_credentials: false,
            ..ProxyOptions::enforcing()
        }
    }

    /// Default options with some limits changed.
    pub fn with_limits(change: impl FnOnce(&mut Limits)) -> ProxyOptions {
        let mut opts = ProxyOptions::default();
        change(&mut opts.limits);
        opts
    }
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            inspector: Arc::new(AllowAll),
            tls: false,
            tls_require: None,
            limits: Limits {
                shutdown_grace: Duration::from_secs(2),
                ..Limits::default()
            },
            upstream_port: None,
            upstream_tls: None,
            policies_dir: None,
            admin: false,
            data_dir: None,
            dev_credentials: true,
            approvals: Default::default(),
            store_faults: Default::default(),
        }
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A firewall in front of the test cluster. Identities: `alice` (human,
/// role deployer → app_owner), `rita` (role readonly → app_read; not in the
/// policies, so an enforcing proxy denies her everything), `oncall` (human,
/// role readonly), `ops-agent`
/// (agent, role agent), `deploy-bot` (ci, role deployer), `billing-svc`
/// (service, role billing), all with [`PASSWORD`].
pub struct Proxy {
    pub running: Option<Running>,
    pub port: u16,
    pub dir: PathBuf,
    pub cert_path: Option<PathBuf>,
    /// `http://...` of the admin API, when started with `admin`.
    pub admin_url: Option<String>,
    /// The config it was started with.
    pub config: Config,
}

impl Proxy {
    pub async fn start(opts: ProxyOptions) -> Proxy {
        match Self::try_start(opts).await {
            Ok(p) => p,
            Err(e) => panic!("start infraveil: {e}"),
        }
    }

    /// [`Proxy::start`], returning the daemon's refusal as text.
    pub async fn try_start(opts: ProxyOptions) -> Result<Proxy, String> {
        // For reqwest clients in tests (rustls without a built-in provider).
        infraveil::net::tls::install_default_provider();
        let c = cluster();
        let dir = scratch_dir();
        let mut passwords = std::collections::BTreeMap::new();
        for (role, pw) in &c.passwords {
            let f = dir.join(format!("pw-{role}"));
            std::fs::write(&f, pw).unwrap();
            passwords.insert(role.clone(), SecretSource::file(f));
        }
        std::fs::write(dir.join("dev-secret"), PASSWORD).unwrap();
        std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
        let mut cert_path = None;
        let tls = if opts.tls {
            // The demo's names: `127.0.0.1` for the URL it prints.
            let (cert, key) =
                infraveil::net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
            std::fs::write(dir.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
            cert_path = Some(dir.join("cert.pem"));
            Some(TlsConfig {
                require: opts.tls_require,
                ..TlsConfig::new(dir.join("cert.pem"), dir.join("key.pem"))
            })
        } else {
            None
        };
        let dev = |identity: &str, role: &str| DevCredential {
            identity: identity.into(),
            role: role.into(),
            secret: SecretSource::file(dir.join("dev-secret")),
        };
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls,
            upstream: UpstreamConfig {
                host: "127.0.0.1".into(),
                port: opts.upstream_port.unwrap_or(c.port),
                tls: opts.upstream_tls.as_ref().map(|t| t.0).unwrap_or_default(),
                ca_file: opts.upstream_tls.as_ref().and_then(|t| t.1.clone()),
                server_name: Some("localhost".into()),
                connect_timeout: Duration::from_secs(3),
                passwords,
            },
            admin: if opts.admin {
                infraveil::config::AdminConfig {
                    listen: Some("127.0.0.1:0".parse().unwrap()),
                    token: Some(SecretSource::file(dir.join("admin-token"))),
                }
            } else {
                Default::default()
            },
            policies_dir: opts
                .policies_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")),
            data_dir: opts.data_dir.clone().unwrap_or_else(|| dir.join("data")),
            limits: opts.limits,
            approvals: opts.approvals.clone(),
            audit: Default::default(),
            state: Default::default(),
            grants: Default::default(),
            dev_credentials: if opts.dev_credentials {
                vec![
                    dev("alice", "deployer"),
                    dev("rita", "readonly"),
                    dev("oncall", "readonly"),
                    dev("ops-agent", "agent"),
                    dev("deploy-bot", "deployer"),
                    dev("billing-svc", "billing"),
                ]
            } else {
                vec![]
            },
        };
        let extras = infraveil::daemon::Extras {
            store_faults: opts.store_faults.clone(),
            ..Default::default()
        };
        let running = infraveil::daemon::start_with(&config, opts.inspector, extras)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Proxy {
            config,
            port: running.pg_addr.port(),
            admin_url: running.admin_addr.map(|a| format!("http://{a}")),
            running: Some(running),
            dir,
            cert_path,
        })
    }

    /// Run `veilctl` against this proxy's admin API; returns (success,
    /// stdout, stderr).
    pub async fn veilctl(&self, args: &[&str]) -> (bool, String, String) {
        veilctl(self.admin_url.as_deref(), args).await
    }

    /// GET `path` from the admin API with [`ADMIN_TOKEN`]; the body text.
    pub async fn admin_get(&self, path: &str) -> String {
        reqwest::Client::new()
            .get(format!("{}{path}", self.admin_url.as_ref().unwrap()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `veilctl --output json ARGS`, which must succeed.
    pub async fn veilctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.veilctl(&all).await;
        assert!(ok, "veilctl {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("veilctl {args:?}: {e}: {out}"))
    }

    /// The payload of every record of the live log, through `veilctl audit
    /// export EXTRA`.
    pub async fn audit_payloads(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        // Reads and outcomes are written within the read window.
        tokio::time::sleep(self.config.audit.read_window * 3).await;
        let mut args = vec!["audit", "export"];
        args.extend_from_slice(extra);
        let (ok, out, err) = self.veilctl(&args).await;
        assert!(ok, "export failed: {err}");
        payloads(&out)
    }

    /// Issue a grant in-process (no CLI round trip); returns the password.
    pub async fn issue(&self, identity: &str, role: &str) -> String {
        let running = self.running();
        running
            .grants
            .issue(
                &running.shared.policies(),
                infraveil::grants::IssueRequest {
                    identity: identity.into(),
                    role: role.into(),
                    ttl: Some(Duration::from_secs(3600)),
                    reason: None,
                    issued_by: Some("test".into()),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("issue {identity}/{role}: {e}"))
            .password
    }

    /// Issue a grant with veilctl; returns (id, password).
    pub async fn grant(&self, identity: &str, role: &str, ttl: &str) -> (String, String) {
        let v = self
            .veilctl_json(&[
                "grants",
                "issue",
                "--identity",
                identity,
                "--role",
                role,
                "--ttl",
                ttl,
            ])
            .await;
        (
            v["id"].as_str().unwrap().to_owned(),
            v["password"].as_str().unwrap().to_owned(),
        )
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn conn_str(&self, user: &str, db: &str) -> String {
        self.conn_str_with(user, db, PASSWORD)
    }

    pub fn conn_str_with(&self, user: &str, db: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable",
            self.port
        )
    }

    /// The URL form `infraveil demo` prints: TLS verified against this
    /// proxy's certificate (started with `tls`), on `127.0.0.1`.
    pub fn verified_url(&self, user: &str, db: &str, password: &str) -> String {
        let cert = self.cert_path.as_ref().expect("a proxy started with tls");
        let mut url = url::Url::parse(&infraveil::demo::client_url(self.port, db, cert)).unwrap();
        url.set_username(user).unwrap();
        url.set_password(Some(password)).unwrap();
        url.to_string()
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A tokio-postgres client over plain TCP.
    pub async fn connect(&self, user: &str, db: &str) -> tokio_postgres::Client {
        self.try_connect(user, db, PASSWORD)
            .await
            .expect("connect through infraveil")
    }

    /// A tokio-postgres client logging in with `password` (e.g. a grant's).
    pub async fn connect_with(
        &self,
        user: &str,
        db: &str,
        password: &str,
    ) -> tokio_postgres::Client {
        self.try_connect(user, db, password)
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    /// Connect, and get how the connection ended (the SQLSTATE and message
    /// of a FATAL error, which tokio-postgres reports on the connection, not
    /// on the query it interrupted).
    pub async fn connect_watched(
        &self,
        user: &str,
        db: &str,
        password: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::oneshot::Receiver<(std::time::Instant, String)>,
    ) {
        connect_watched(&self.conn_str_with(user, db, password)).await
    }

    pub async fn try_connect(
        &self,
        user: &str,
        db: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let cfg = self.conn_str_with(user, db, password);
        let (client, conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A session on `conn_str`, with a receiver of when and how the connection
/// ended (`SQLSTATE message` of an error the server sent).
pub async fn connect_watched(
    conn_str: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::oneshot::Receiver<(std::time::Instant, String)>,
) {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect with {conn_str}: {e}"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let end = match conn.await {
            Ok(()) => "closed cleanly".to_owned(),
            Err(e) => e
                .as_db_error()
                .map(|d| format!("{} {}", d.code().code(), d.message()))
                .unwrap_or_else(|| e.to_string()),
        };
        let _ = tx.send((std::time::Instant::now(), end));
    });
    (client, rx)
}

/// Run `veilctl` (as user `tester`) against the admin API at `admin_url`
/// with [`ADMIN_TOKEN`], or with no admin API at all (offline forms);
/// returns (success, stdout, stderr).
pub async fn veilctl(admin_url: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_veilctl"));
    cmd.args(args).env("USER", "tester");
    match admin_url {
        Some(url) => cmd
            .env("VEIL_ADMIN_URL", url)
            .env("VEIL_ADMIN_TOKEN", ADMIN_TOKEN),
        None => cmd
            .env_remove("VEIL_ADMIN_URL")
            .env_remove("VEIL_ADMIN_TOKEN"),
    };
    let out = cmd.output().await.expect("run veilctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A cluster of this test's own (to stop, restart or reconfigure), whose
/// upstream roles have the shared cluster's passwords, so a [`Proxy`] can
/// point at it with `upstream_port`.
pub fn private_cluster(opts: ClusterOptions) -> Cluster {
    let own = Cluster::start(&ClusterOptions {
        sample_schema: true,
        unsafe_fast: true,
        reap_on_exit: true,
        ..opts
    })
    .expect("start a private PostgreSQL cluster");
    let mut sql = String::new();
    for (role, pw) in &cluster().passwords {
        sql.push_str(&format!("ALTER ROLE {role} PASSWORD '{pw}';"));
    }
    own.psql("postgres", &sql).expect("set role passwords");
    own
}

/// The single value of a one-row, one-column query.
/// Run `sql` (simple protocol) and require the firewall's 42501 refusal;
/// returns the server's error for further checks.
pub async fn refused(c: &tokio_postgres::Client, sql: &str) -> tokio_postgres::error::DbError {
    let e = c.batch_execute(sql).await.expect_err(sql);
    assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
    e.as_db_error().expect("a server error").clone()
}

pub async fn scalar<T>(c: &tokio_postgres::Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

/// The SQLSTATE of a tokio-postgres error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("not a db error: {e}"))
}

/// Run the `psql` binary; returns (success, stdout, stderr).
pub async fn psql(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("psql")
        .arg(url)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .await
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A byte-level protocol client for cases real drivers never produce.
/// Well-formed messages are encoded with pgwire; malformed ones go through
/// [`Raw::send_frame`] and [`Raw::send_raw`].
pub struct Raw {
    pub reader: FrameReader<TcpStream>,
    /// The process id BackendKeyData gave (0 before login).
    pub pid: i32,
}

impl Raw {
    /// A connection that has sent nothing yet.
    pub async fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Raw {
            reader: FrameReader::new(s, 1 << 30),
            pid: 0,
        }
    }

    /// Send a startup message with these parameters.
    pub async fn startup(&mut self, params: &[(&str, &str)]) {
        let mut m = Startup::new();
        for (k, v) in params {
            m.parameters.insert(k.to_string(), v.to_string());
        }
        self.send(&m).await;
    }

    /// Connect and log in with SCRAM (plain TCP), up to `ReadyForQuery`.
    pub async fn login(port: u16, user: &str, db: &str) -> Raw {
        Self::login_with(port, user, db, PASSWORD).await
    }

    /// [`Raw::login`] with a given password (e.g. a grant's).
    pub async fn login_with(port: u16, user: &str, db: &str, password: &str) -> Raw {
        match Self::login_params(port, user, db, password, &[]).await {
            Ok((raw, _)) => raw,
            Err(codes) => panic!("login failed: {codes:?}"),
        }
    }

    /// Log in with SCRAM (plain TCP) sending `extra` start-up parameters
    /// too, to the firewall or straight to PostgreSQL. Up to
    /// `ReadyForQuery`, with the `ParameterStatus` values the server sent;
    /// or the SQLSTATEs of the error that ended the attempt.
    pub async fn login_params(
        port: u16,
        user: &str,
        db: &str,
        password: &str,
        extra: &[(&str, &str)],
    ) -> Result<(Raw, std::collections::BTreeMap<String, String>), Vec<String>> {
        use pgwire::api::auth::sasl::scram::ScramClientAuth;
        let mut raw = Raw::connect(port).await;
        let mut params = vec![("user", user), ("database", db)];
        params.extend_from_slice(extra);
        raw.startup(&params).await;
        let client = ScramClientAuth::new(user.into(), password.into());
        let (first, waiting) = client.build_client_first().unwrap();
        let f = raw.next().await;
        if f.tag() == b'E' {
            return Err(error_code(&f).into_iter().collect());
        }
        assert_eq!(f.tag(), b'R', "{:?}", f.bytes);
        let initial =
            SASLInitialResponse::new("SCRAM-SHA-256".into(), Some(first.into_bytes().into()));
        raw.send(&PasswordMessageFamily::SASLInitialResponse(initial))
            .await;
        let f = raw.next().await;
        assert_eq!(f.tag(), b'R', "{:?}", f.bytes);
        let (fin, _) = waiting.build_client_final(&f.body()[4..]).unwrap();
        let response = SASLResponse::new(fin.into_bytes().into());
        raw.send(&PasswordMessageFamily::SASLResponse(response))
            .await;
        let mut status = std::collections::BTreeMap::new();
        loop {
            let f = raw.next().await;
            match f.tag() {
                b'K' => raw.pid = i32::from_be_bytes(f.body()[..4].try_into().unwrap()),
                b'S' => {
                    let mut parts = f.body().split(|&b| b == 0);
                    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let (k, v) = (text().into_owned(), text().into_owned());
                    status.insert(k, v);
                }
                b'Z' => return Ok((raw, status)),
                b'E' => return Err(error_code(&f).into_iter().collect()),
                _ => {}
            }
        }
    }

    /// Send one message, encoded by pgwire.
    pub async fn send<M: Message>(&mut self, msg: &M) {
        let mut b = BytesMut::new();
        msg.encode(&mut b).unwrap();
        self.send_raw(&b).await;
    }

    /// Send a frame with any tag and body, for messages pgwire will not
    /// encode (malformed ones, FunctionCall, bytes that are not UTF-8).
    pub async fn send_frame(&mut self, tag: u8, body: &[u8]) {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(4 + body.len() as i32);
        b.put_slice(body);
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` once the server has closed.
    async fn try_next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), self.reader.next())
            .await
            .expect("timed out waiting for the server")
            .ok()
            .flatten()
    }

    pub async fn next(&mut self) -> Frame {
        self.try_next().await.expect("connection closed")
    }

    /// Read messages up to and including `ReadyForQuery`; returns their tags,
    /// the error codes seen, and the transaction status.
    pub async fn until_ready(&mut self) -> (Vec<u8>, Vec<String>, u8) {
        let mut tags = vec![];
        let mut codes = vec![];
        loop {
            let f = self.next().await;
            tags.push(f.tag());
            codes.extend(error_code(&f));
            if f.tag() == b'Z' {
                return (tags, codes, f.body()[0]);
            }
        }
    }

    /// Parse/Bind/Execute each statement (unnamed) in one batch with a
    /// single Sync; returns what [`Raw::until_ready`] returns.
    pub async fn pipeline(&mut self, statements: &[&str]) -> (Vec<u8>, Vec<String>, u8) {
        for sql in statements {
            self.send(&parse("", sql)).await;
            self.send(&bind("")).await;
            self.send(&execute()).await;
        }
        self.send(&sync()).await;
        self.until_ready().await
    }

    /// One simple Query; returns what [`Raw::until_ready`] returns.
    pub async fn pipeline_query(&mut self, sql: &str) -> (Vec<u8>, Vec<String>, u8) {
        self.send(&query(sql)).await;
        self.until_ready().await
    }

    /// Read until the server closes; returns the error codes seen.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut codes = vec![];
        while let Some(f) = self.try_next().await {
            codes.extend(error_code(&f));
        }
        codes
    }
}

/// The payloads of exported audit records (JSON lines).
pub fn payloads(jsonl: &str) -> Vec<serde_json::Value> {
    jsonl
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_str(r["payload"].as_str().unwrap()).unwrap()
        })
        .collect()
}

/// A proxy enforcing the approvals fixture (`testdata/policies/approvals`:
/// `alice` in `ops`, agents `bot-a` and `bot-b` in `bot`, approver
/// `oncall`), with grants only and the admin API.
pub async fn approvals_proxy(approvals: infraveil::config::ApprovalsConfig) -> Proxy {
    Proxy::start(ProxyOptions {
        policies_dir: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/policies/approvals"),
        ),
        approvals,
        ..ProxyOptions::with_grants()
    })
    .await
}

/// [`approvals_proxy`] with requests that expire after a minute.
pub async fn approvals_fixture() -> Proxy {
    approvals_proxy(infraveil::config::ApprovalsConfig {
        timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await
}

/// The SQLSTATE of an `ErrorResponse` frame.
pub fn error_code(f: &Frame) -> Option<String> {
    if f.tag() != b'E' {
        return None;
    }
    let fields = ErrorFields::decode(&f.bytes).expect("well-formed ErrorResponse");
    fields.code().map(str::to_owned)
}

pub fn query(sql: &str) -> Query {
    Query::new(sql.into())
}

/// Parse of a statement without parameter types.
pub fn parse(name: &str, sql: &str) -> Parse {
    Parse::new((!name.is_empty()).then(|| name.into()), sql.into(), vec![])
}

/// Bind of the unnamed portal to `stmt`, no parameters, text results.
pub fn bind(stmt: &str) -> Bind {
    Bind::new(
        None,
        (!stmt.is_empty()).then(|| stmt.into()),
        vec![],
        vec![],
        vec![],
    )
}

/// Execute the unnamed portal, all rows.
pub fn execute() -> Execute {
    Execute::new(None, 0)
}

pub fn sync() -> Sync {
    Sync::new()
}

pub fn copy_data(data: &str) -> CopyData {
    CopyData::new(data.to_owned().into())
}

pub fn copy_done() -> CopyDone {
    CopyDone::new()
}

pub fn copy_fail(message: &str) -> CopyFail {
    CopyFail::new(message.into())
}

/// A Slack-style webhook receiver: every POST is handed to the test.
pub struct Receiver {
    pub url: String,
    rx: tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, serde_json::Value)>,
}

pub async fn receiver() -> Receiver {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let _ = tx.send((headers, v));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, rx }
}

impl Receiver {
    pub async fn next(&mut self) -> (axum::http::HeaderMap, serde_json::Value) {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a webhook message")
            .unwrap()
    }

    /// The next message whose `text` contains `needle` (follow-ups of
    /// other requests may come first).
    pub async fn next_saying(&mut self, needle: &str) -> serde_json::Value {
        loop {
            let (_, m) = self.next().await;
            if m["text"].as_str().is_some_and(|t| t.contains(needle)) {
                return m;
            }
        }
    }
}

/// The approvals fixture with a webhook (signed with `signing_secret`) and
/// requests that expire after `timeout`.
pub async fn approvals_proxy_with_webhook(
    url: &str,
    signing_secret: &str,
    timeout: Duration,
) -> Proxy {
    let dir = scratch_dir();
    std::fs::write(dir.join("hook-url"), url).unwrap();
    std::fs::write(dir.join("hook-secret"), signing_secret).unwrap();
    approvals_proxy(infraveil::config::ApprovalsConfig {
        timeout,
        webhook: Some(infraveil::config::WebhookConfig {
            url: SecretSource::file(dir.join("hook-url")),
            signing_secret: Some(SecretSource::file(dir.join("hook-secret"))),
            timeout: Duration::from_millis(800),
            retries: 1,
        }),
        ..Default::default()
    })
    .await
}

/// In the approvals fixture: a grant for alice in `ops` with `reason`, and
/// an approver secret for oncall, both through veilctl. Returns their
/// secrets.
pub async fn alice_and_oncall(p: &Proxy, reason: &str) -> (String, String) {
    let g = p
        .veilctl_json(&[
            "grants",
            "issue",
            "--identity",
            "alice",
            "--role",
            "ops",
            "--ttl",
            "1h",
            "--reason",
            reason,
        ])
        .await;
    let e = p
        .veilctl_json(&["approvers", "enroll", "--identity", "oncall"])
        .await;
    (
        g["password"].as_str().unwrap().to_owned(),
        e["secret"].as_str().unwrap().to_owned(),
    )
}

/// A database with `t` (100 rows), a view and a child table depending on
/// it, writable by the test roles.
pub fn approvals_db(name: &str) -> String {
    fresh_db_with(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g;
             CREATE VIEW tv AS SELECT * FROM t;
             CREATE TABLE child (id int PRIMARY KEY, t_id int REFERENCES t);
             ALTER TABLE t OWNER TO app_owner; ALTER VIEW tv OWNER TO app_owner;
             ALTER TABLE child OWNER TO app_owner;
             GRANT SELECT, INSERT, UPDATE, DELETE ON t TO app_write;
             GRANT SELECT ON t TO app_read;
             ANALYZE t;",
    )
}

/// The Approve button's link in a webhook message.
pub fn approve_url(message: &serde_json::Value) -> String {
    let actions = message["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
        .unwrap_or_else(|| panic!("no buttons in {message}"));
    let buttons = &actions["elements"];
    assert_eq!(buttons[0]["text"]["text"], "Approve", "{message}");
    assert_eq!(buttons[1]["text"]["text"], "Deny");
    buttons[0]["url"].as_str().unwrap().to_owned()
}

/// Every section's text of a webhook message, joined.
pub fn sections(message: &serde_json::Value) -> String {
    message["blocks"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter(|b| b["type"] == "section")
                .filter_map(|b| b["text"]["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}
