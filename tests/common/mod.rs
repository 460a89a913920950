//! Test harness: one throwaway PostgreSQL cluster per test binary (a
//! database per test for isolation), the firewall started in-process in front
//! of it, and a raw protocol client for byte-level cases.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use infraveil::config::{Config, DevCredential, Limits, SecretSource, TlsConfig, UpstreamConfig};
use infraveil::daemon::Running;
use infraveil::inspect::{AllowAll, Inspector};
use infraveil::protocol::{Frame, FrameReader};
use infraveil::sandbox::{Cluster, ClusterOptions};
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

fn scratch_dir() -> PathBuf {
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
    pub limits: Limits,
    pub upstream_port: Option<u16>,
    /// Upstream TLS mode and CA file.
    pub upstream_tls: Option<(infraveil::config::UpstreamTlsMode, Option<PathBuf>)>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            inspector: Arc::new(AllowAll),
            tls: false,
            limits: Limits {
                shutdown_grace: Duration::from_secs(2),
                ..Limits::default()
            },
            upstream_port: None,
            upstream_tls: None,
        }
    }
}

/// A firewall in front of the test cluster. Identities: `alice` (role
/// deployer → app_owner) and `rita` (role readonly → app_read), both with
/// [`PASSWORD`].
pub struct Proxy {
    pub running: Option<Running>,
    pub port: u16,
    pub dir: PathBuf,
    pub cert_path: Option<PathBuf>,
}

impl Proxy {
    pub async fn start(opts: ProxyOptions) -> Proxy {
        let c = cluster();
        let dir = scratch_dir();
        let mut passwords = std::collections::BTreeMap::new();
        for (role, pw) in &c.passwords {
            let f = dir.join(format!("pw-{role}"));
            std::fs::write(&f, pw).unwrap();
            passwords.insert(role.clone(), SecretSource::file(f));
        }
        std::fs::write(dir.join("dev-secret"), PASSWORD).unwrap();
        let mut cert_path = None;
        let tls = if opts.tls {
            let (cert, key) = infraveil::proxy::tls::self_signed(&["localhost"]).unwrap();
            std::fs::write(dir.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
            cert_path = Some(dir.join("cert.pem"));
            Some(TlsConfig {
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
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
            admin: Default::default(),
            policies_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"),
            data_dir: dir.join("data"),
            limits: opts.limits,
            dev_credentials: vec![dev("alice", "deployer"), dev("rita", "readonly")],
        };
        let running = infraveil::daemon::start(&config, opts.inspector)
            .await
            .expect("start infraveil");
        Proxy {
            port: running.pg_addr.port(),
            running: Some(running),
            dir,
            cert_path,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn conn_str(&self, user: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={PASSWORD} dbname={db} sslmode=disable",
            self.port
        )
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

    pub async fn try_connect(
        &self,
        user: &str,
        db: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let cfg = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable",
            self.port
        );
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
pub struct Raw {
    pub reader: FrameReader<TcpStream>,
}

impl Raw {
    /// Connect and log in with SCRAM (plain TCP), up to `ReadyForQuery`.
    pub async fn login(port: u16, user: &str, db: &str) -> Raw {
        use pgwire::api::auth::sasl::scram::ScramClientAuth;
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut b = BytesMut::new();
        let body = format!("user\0{user}\0database\0{db}\0\0");
        b.put_i32(8 + body.len() as i32);
        b.put_i32(196608);
        b.put_slice(body.as_bytes());
        s.write_all(&b).await.unwrap();
        let mut raw = Raw {
            reader: FrameReader::new(s, 1 << 30),
        };
        let client = ScramClientAuth::new(user.into(), PASSWORD.into());
        let (first, waiting) = client.build_client_first().unwrap();
        let f = raw.next().await;
        assert_eq!(f.tag(), b'R');
        let mut m = BytesMut::new();
        m.put_slice(b"SCRAM-SHA-256\0");
        m.put_i32(first.len() as i32);
        m.put_slice(first.as_bytes());
        raw.send(b'p', &m).await;
        let f = raw.next().await;
        assert_eq!(f.tag(), b'R', "{:?}", f.bytes);
        let (fin, _) = waiting.build_client_final(&f.body()[4..]).unwrap();
        raw.send(b'p', fin.as_bytes()).await;
        loop {
            let f = raw.next().await;
            match f.tag() {
                b'Z' => return raw,
                b'E' => panic!("login failed: {:?}", f.bytes),
                _ => {}
            }
        }
    }

    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(4 + body.len() as i32);
        b.put_slice(body);
        self.reader.get_mut().write_all(&b).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    pub async fn next(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(10), self.reader.next())
            .await
            .expect("timed out waiting for a message")
            .expect("read frame")
            .expect("connection closed")
    }

    /// Read messages up to and including `ReadyForQuery`; returns their tags
    /// and the error codes seen.
    pub async fn until_ready(&mut self) -> (Vec<u8>, Vec<String>, u8) {
        let mut tags = vec![];
        let mut codes = vec![];
        loop {
            let f = self.next().await;
            tags.push(f.tag());
            if f.tag() == b'E' {
                let fields = infraveil::protocol::error::decode_error_fields(&f.bytes).unwrap();
                codes.push(fields.iter().find(|x| x.0 == b'C').unwrap().1.clone());
            }
            if f.tag() == b'Z' {
                return (tags, codes, f.body()[0]);
            }
        }
    }

    /// Read until the server closes; returns the error codes seen.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut codes = vec![];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.reader.next()).await {
                Ok(Ok(Some(f))) => {
                    if f.tag() == b'E' {
                        let fields =
                            infraveil::protocol::error::decode_error_fields(&f.bytes).unwrap();
                        codes.push(fields.iter().find(|x| x.0 == b'C').unwrap().1.clone());
                    }
                }
                Ok(_) => return codes,
                Err(_) => panic!("server did not close the connection"),
            }
        }
    }
}

pub fn query_body(sql: &str) -> Vec<u8> {
    let mut v = sql.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn parse_body(name: &str, sql: &str) -> Vec<u8> {
    let mut v = BytesMut::new();
    v.put_slice(name.as_bytes());
    v.put_u8(0);
    v.put_slice(sql.as_bytes());
    v.put_u8(0);
    v.put_i16(0);
    v.to_vec()
}

/// Bind of the unnamed portal to `stmt`, no parameters, text results.
pub fn bind_body(stmt: &str) -> Vec<u8> {
    let mut v = BytesMut::new();
    v.put_u8(0);
    v.put_slice(stmt.as_bytes());
    v.put_u8(0);
    v.put_i16(0);
    v.put_i16(0);
    v.put_i16(0);
    v.to_vec()
}

pub fn execute_body() -> Vec<u8> {
    vec![0, 0, 0, 0, 0]
}
