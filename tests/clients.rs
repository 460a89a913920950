//! Real drivers through the firewall: each script in `tests/clients/` does
//! what the driver's users do daily (TLS with the URL form `infraveil demo`
//! prints, parameters and types, transactions with rollback, an error then
//! a working statement, COPY, prepared statement reuse, server-side
//! cursors, large values, LISTEN/NOTIFY, cancel, held statements) against
//! the firewall in front of the test cluster, as `alice` in role `deployer`
//! (whose destructive statements wait for approval) and `ops-agent` in role
//! `agent` (whose writes are deferred). sqlx runs in this file.
//!
//! Needs the drivers (see `tests/clients/README.md`). Without them the
//! tests say so and pass, unless `INFRAVEIL_REQUIRE_DRIVERS=1` (CI sets it).

mod common;

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

/// sqlx (tokio, rustls), in this process: always the extended protocol
/// with binary results and statements cached per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx() {
    use futures_util::TryStreamExt;
    use sqlx::{Connection, Row};

    let b = setup("sqlx").await;
    let url = b.p.verified_url("alice", &b.db, PASSWORD);
    let mut c = sqlx::PgConnection::connect(&url)
        .await
        .expect("sqlx connects with the demo's URL");
    let plain = url.replace("sslmode=verify-full", "sslmode=disable");
    let refused = sqlx::PgConnection::connect(&plain)
        .await
        .expect_err("plain TCP refused");
    assert!(refused.to_string().contains("TLS"), "{refused}");

    // Parameters and types, binary both ways.
    let data: Vec<u8> = (0..8 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let row = sqlx::query(
        "SELECT $1::int4, $2::text, $3::float8, $4::bool, $5::int4[], $6::text, $7::bytea, length($7)",
    )
    .bind(42i32)
    .bind("ünïcödé ✓")
    .bind(1.5f64)
    .bind(true)
    .bind(vec![1i32, 2, 3])
    .bind(None::<String>)
    .bind(&data)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(row.get::<i32, _>(0), 42);
    assert_eq!(row.get::<String, _>(1), "ünïcödé ✓");
    assert_eq!(row.get::<f64, _>(2), 1.5);
    assert!(row.get::<bool, _>(3));
    assert_eq!(row.get::<Vec<i32>, _>(4), vec![1, 2, 3]);
    assert_eq!(row.get::<Option<String>, _>(5), None);
    assert!(
        row.get::<Vec<u8>, _>(6) == data,
        "the 8 MB bytea came back changed"
    );
    assert_eq!(row.get::<i32, _>(7), 8 * 1024 * 1024);

    // Transactions: commit, rollback, a savepoint (nested begin) rolled back.
    let mut tx = c.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, name) VALUES (1, 'kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, name) VALUES (2, 'rolled back')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut inner = tx.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, name) VALUES (3, 'inner')")
        .execute(&mut *inner)
        .await
        .unwrap();
    inner.rollback().await.unwrap();
    tx.rollback().await.unwrap();
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(ids, vec![1]);

    // An error (PostgreSQL's, the firewall's), then a working statement.
    let code = |e: sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    };
    let e = sqlx::query("SELECT 1/0").execute(&mut c).await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("22012"));
    let e = sqlx::query("SET ROLE postgres")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("42501"));
    let two: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
        .bind(1)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(two, 2);

    // One cached statement, reused.
    sqlx::query("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(100, 119) g")
        .execute(&mut c)
        .await
        .unwrap();
    for i in 100..120 {
        let name: String = sqlx::query_scalar("SELECT name FROM items WHERE id = $1")
            .bind(i)
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(name, format!("n{i}"));
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT name FROM items WHERE id = $1'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(n, 1);

    // COPY in and out.
    let mut copy = c
        .copy_in_raw("COPY items (id, name) FROM STDIN")
        .await
        .unwrap();
    let text: String = (0..500)
        .map(|i| format!("{}\tcopied {i}\n", 1000 + i))
        .collect();
    copy.send(text.as_bytes()).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 500);
    let out: Vec<bytes::Bytes> = c
        .copy_out_raw("COPY (SELECT id, name FROM items WHERE id >= 1000 ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.concat(), text.as_bytes());

    // 100000 rows streamed.
    let mut rows =
        sqlx::query_scalar::<_, i32>("SELECT g FROM generate_series(1, 100000) g").fetch(&mut c);
    let (mut n, mut total) = (0u64, 0u64);
    while let Some(g) = rows.try_next().await.unwrap() {
        n += 1;
        total += g as u64;
    }
    drop(rows);
    assert_eq!((n, total), (100_000, 100_000 * 100_001 / 2));

    // LISTEN/NOTIFY, to an idle PgListener.
    let mut listener = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    listener.listen("infraveil_chan").await.unwrap();
    sqlx::query("NOTIFY infraveil_chan, 'one'")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('infraveil_chan', $1)")
        .bind("two")
        .execute(&mut c)
        .await
        .unwrap();
    for want in ["one", "two"] {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification")
            .unwrap();
        assert_eq!((n.channel(), n.payload()), ("infraveil_chan", want));
    }

    // A held DELETE waits for its approval (wait mode).
    let done = sqlx::query("DELETE FROM held")
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 10);

    // A pool of three serving twelve queries at once.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&url)
        .await
        .unwrap();
    let all = futures_util::future::join_all((0..12).map(|i| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT $1::int4")
                .bind(i)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(all, (0..12).collect::<Vec<_>>());
    pool.close().await;
    c.close().await.unwrap();

    // A deferred INSERT: refused with its approval id, run once approved.
    let agent_url = b.p.verified_url("ops-agent", &b.db, PASSWORD);
    let mut agent = sqlx::PgConnection::connect(&agent_url).await.unwrap();
    let insert = || {
        sqlx::query("INSERT INTO held (id, v) VALUES ($1, $2)")
            .bind(100)
            .bind("deferred")
    };
    let e = insert().execute(&mut agent).await.unwrap_err();
    let db = e.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("42501"));
    assert!(
        db.message().contains("approval request a-"),
        "{}",
        db.message()
    );
    let mut ran = false;
    for _ in 0..100 {
        match insert().execute(&mut agent).await {
            Ok(done) => {
                assert_eq!(done.rows_affected(), 1);
                ran = true;
                break;
            }
            Err(e) => {
                assert_eq!(code(e).as_deref(), Some("42501"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(ran, "never approved");
    agent.close().await.unwrap();
    b.finish().await;
}
