//! Real drivers through the firewall: each script in `tests/clients/` does
//! what the driver's users do daily (TLS with the URL form `infraveil demo`
//! prints, parameters and types, transactions with rollback, an error then
//! a working statement, COPY, prepared statement reuse, server-side
//! cursors, large values, LISTEN/NOTIFY, cancel, held statements) against
//! the firewall in front of the test cluster, as `alice` in role `deployer`
//! (whose destructive statements wait for approval) and `ops-agent` in role
//! `agent` (whose writes are deferred). sqlx runs in this process
//! (`tests/clients/sqlx_suite.rs`).
//!
//! Needs the drivers (see `tests/clients/README.md`). Without them the
//! tests say so and pass, unless `INFRAVEIL_REQUIRE_DRIVERS=1` (CI sets it).

mod common;
#[path = "clients/sqlx_suite.rs"]
mod sqlx_suite;

use std::path::Path;
use std::time::Duration;

use common::drivers::*;
use common::*;
use infraveil::approvals::Status;

/// A firewall with TLS and the admin API in front of a fresh database
/// holding `items` and `held` (ten rows), and an approver who approves
/// every request as `oncall` as soon as it is pending.
struct Bench {
    p: Proxy,
    db: String,
    approver: tokio::task::JoinHandle<()>,
}

async fn setup(name: &str) -> Bench {
    let db = fresh_db_with(
        name,
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric, tags text[]);
         CREATE TABLE held (id int PRIMARY KEY, v text);
         INSERT INTO held SELECT g, 'x' FROM generate_series(1, 10) g;
         ALTER TABLE items OWNER TO app_owner;
         ALTER TABLE held OWNER TO app_owner;
         GRANT SELECT, INSERT, UPDATE, DELETE ON items, held TO app_write;",
    );
    let p = Proxy::start(ProxyOptions {
        tls: true,
        admin: true,
        ..ProxyOptions::enforcing()
    })
    .await;
    let approvals = p.running().shared.approvals.clone().expect("approvals on");
    let admin = p.admin_url.clone().expect("the admin API");
    let approver = tokio::spawn(async move {
        loop {
            for r in approvals.list(false) {
                if r.status != Status::Pending {
                    continue;
                }
                let (ok, _, err) = veilctl(
                    Some(&admin),
                    &["approvals", "approve", &r.id, "--as", "oncall"],
                )
                .await;
                if !ok {
                    eprintln!("approve {}: {err}", r.id);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Bench { p, db, approver }
}

impl Bench {
    /// `DATABASE_URL` (alice) and `AGENT_URL` (ops-agent) in the demo's
    /// form, and the same as pgjdbc wants them (`JDBC_URL`, `JDBC_AGENT_URL`).
    fn env(&self) -> Vec<(&'static str, String)> {
        let cert = self.p.cert_path.as_ref().expect("tls");
        let jdbc = |user: &str| {
            let demo = infraveil::demo::client_url(self.p.port, &self.db, cert);
            format!(
                "jdbc:{}&user={user}&password={PASSWORD}",
                demo.replacen("postgres://", "postgresql://", 1)
            )
        };
        vec![
            (
                "DATABASE_URL",
                self.p.verified_url("alice", &self.db, PASSWORD),
            ),
            (
                "AGENT_URL",
                self.p.verified_url("ops-agent", &self.db, PASSWORD),
            ),
            ("JDBC_URL", jdbc("alice")),
            ("JDBC_AGENT_URL", jdbc("ops-agent")),
        ]
    }

    /// Check that the script's held statements ran once approved, alice's
    /// (wait) and ops-agent's (defer), then stop.
    async fn finish(self) {
        self.approver.abort();
        let approvals = self.p.running().shared.approvals.clone().unwrap();
        let all = approvals.list(true);
        for (identity, mode) in [("alice", "wait"), ("ops-agent", "defer")] {
            assert!(
                all.iter().any(|r| r.identity == identity
                    && r.status == Status::Executed
                    && serde_json::to_value(r.mode).unwrap() == mode),
                "no executed {mode} approval of {identity}: {all:#?}"
            );
        }
        self.p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3() {
    if !have_python_module("psycopg").await {
        return;
    }
    let b = setup("psycopg").await;
    run_script("python3", &["psycopg_suite.py"], ".", &b.env()).await;
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    if !have_python_module("asyncpg").await {
        return;
    }
    let b = setup("asyncpg").await;
    run_script("python3", &["asyncpg_suite.py"], ".", &b.env()).await;
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy() {
    if !have_python_module("sqlalchemy, psycopg").await {
        return;
    }
    let b = setup("sqlalchemy").await;
    run_script("python3", &["sqlalchemy_suite.py"], ".", &b.env()).await;
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let dir = clients_dir().join("node");
    let check = "require('pg'); require('pg-cursor')";
    if !have_driver("node-postgres (pg)", "node", &["-e", check], &dir).await {
        return;
    }
    let b = setup("node_pg").await;
    let stderr = run_script("node", &["pg_suite.js"], "node", &b.env()).await;
    // The URL is taken as it is: no warning about what sslmode means.
    assert!(!stderr.contains("SECURITY WARNING"), "{stderr}");
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    let Some(cp) = java_classpath(&["postgresql.jar"]).await else {
        return;
    };
    let b = setup("pgjdbc").await;
    run_script("java", &["-cp", &cp, "PgjdbcSuite.java"], "java", &b.env()).await;
    b.finish().await;
}

/// pgx v4 from Debian's Go packages, built in GOPATH mode (nothing is
/// downloaded; Debian 12 has no pgx v5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgx() {
    let gopath = std::env::var("INFRAVEIL_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    let pgx = Path::new(&gopath).join("src/github.com/jackc/pgx/v4");
    if !have_driver(
        "pgx v4 (golang-github-jackc-pgx-v4-dev)",
        "test",
        &["-d", &pgx.to_string_lossy()],
        &clients_dir(),
    )
    .await
        || !have_driver("a Go toolchain", "go", &["version"], &clients_dir()).await
    {
        return;
    }
    let b = setup("pgx").await;
    let mut env = b.env();
    env.push(("GO111MODULE", "off".into()));
    env.push(("GOPATH", gopath));
    // Shared by runs: the second build of pgx takes a fraction of the first.
    let cache = std::env::temp_dir().join("infraveil-go-build");
    env.push(("GOCACHE", cache.to_string_lossy().into_owned()));
    run_script("go", &["run", "pgx_suite.go"], "go", &env).await;
    b.finish().await;
}

/// sqlx (tokio, rustls), in this process: `tests/clients/sqlx_suite.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx() {
    let b = setup("sqlx").await;
    let url = b.p.verified_url("alice", &b.db, PASSWORD);
    let agent_url = b.p.verified_url("ops-agent", &b.db, PASSWORD);
    sqlx_suite::run(&url, &agent_url).await;
    b.finish().await;
}
