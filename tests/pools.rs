//! Pools in front of the firewall and behind it.
//!
//! In front: an application's client-side pool (SQLAlchemy's QueuePool,
//! HikariCP on pgjdbc, node-postgres `Pool`) keeps working across grant
//! expiry: the sessions of the expired grant end with a clean `FATAL`
//! (57P01), new connections with it are refused (28P01), and once the
//! application has a fresh grant the same pool works again. The scripts
//! ask the admin API for their grants themselves.
//!
//! Behind: pgbouncer in transaction mode between the firewall and
//! PostgreSQL, with the simple and the extended protocol.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use common::drivers::*;
use common::*;

/// A firewall with TLS and the admin API that admits grants only, in
/// front of a fresh database with an empty `items` writable by `writer`.
async fn grants_bench(name: &str) -> (Proxy, Vec<(&'static str, String)>) {
    let db = fresh_db_with(
        name,
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric, tags text[]);
         GRANT SELECT, INSERT, UPDATE, DELETE ON items TO app_write;",
    );
    let p = Proxy::start(ProxyOptions {
        tls: true,
        ..ProxyOptions::with_grants()
    })
    .await;
    let url = infraveil::demo::client_url(p.port, &db, p.cert_path.as_ref().unwrap());
    let env = vec![
        (
            "JDBC_URL",
            format!("jdbc:{}", url.replacen("postgres://", "postgresql://", 1)),
        ),
        ("DATABASE_URL", url),
        ("ADMIN_URL", p.admin_url.clone().unwrap()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ];
    (p, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_queue_pool_across_grant_expiry() {
    if !have_python_module("sqlalchemy, psycopg").await {
        return;
    }
    let (p, env) = grants_bench("sa_pool").await;
    run_script("python3", &["sqlalchemy_pool.py"], ".", &env).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pool_across_grant_expiry() {
    let dir = clients_dir().join("node");
    if !have_driver("node-postgres (pg)", "node", &["-e", "require('pg')"], &dir).await {
        return;
    }
    let (p, env) = grants_bench("node_pool").await;
    run_script("node", &["pool_expiry.js"], "node", &env).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikaricp_across_grant_expiry() {
    let jars = [
        "postgresql.jar",
        "HikariCP.jar",
        "slf4j-api.jar",
        "slf4j-nop.jar",
    ];
    let Some(cp) = java_classpath(&jars).await else {
        return;
    };
    let (p, env) = grants_bench("hikari").await;
    run_script("java", &["-cp", &cp, "HikariExpiry.java"], "java", &env).await;
    p.shutdown().await;
}

/// pgbouncer in transaction mode in front of the test cluster, run as the
/// cluster's own (unprivileged) user: pgbouncer will not run as root.
struct Bouncer {
    _child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pgbouncer_bin() -> String {
    std::env::var("PGBOUNCER").unwrap_or_else(|_| "/usr/sbin/pgbouncer".into())
}

async fn pgbouncer() -> Option<Bouncer> {
    let bin = pgbouncer_bin();
    if !have_driver("pgbouncer", &bin, &["--version"], &std::env::temp_dir()).await {
        return None;
    }
    let c = cluster();
    let owner = std::fs::metadata(&c.dir).expect("the cluster's directory");
    let dir = scratch_dir();
    let port = common::child::free_port();
    let users: String = c
        .passwords
        .iter()
        .map(|(role, pw)| format!("\"{role}\" \"{pw}\"\n"))
        .collect();
    std::fs::write(dir.join("userlist.txt"), users).unwrap();
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\n* = host=127.0.0.1 port={upstream}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n\
             logfile = {dir}/pgbouncer.log\n",
            upstream = c.port,
            dir = dir.display(),
        ),
    )
    .unwrap();
    for f in ["", "userlist.txt", "pgbouncer.ini"] {
        std::os::unix::fs::chown(dir.join(f), Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg(dir.join("pgbouncer.ini"));
    if nix::unistd::Uid::effective().is_root() {
        cmd.uid(owner.uid()).gid(owner.gid());
    }
    // Its log (also on stderr) goes to pgbouncer.log only.
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("start pgbouncer");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(Bouncer {
                _child: child,
                port,
                dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "pgbouncer did not come up: {}",
        std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
    );
}

/// firewall → pgbouncer (transaction mode) → PostgreSQL: statements that
/// keep no session state across transactions work with the simple
/// protocol (psql) and the extended one (unnamed statements, or named ones
/// inside a transaction block), and the firewall still enforces its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_in_transaction_mode_behind_the_firewall() {
    let Some(bouncer) = pgbouncer().await else {
        return;
    };
    let db = fresh_db_with(
        "bouncer",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
         ALTER TABLE items OWNER TO app_owner;",
    );
    let p = Proxy::start(ProxyOptions {
        upstream_port: Some(bouncer.port),
        ..ProxyOptions::enforcing()
    })
    .await;

    // Simple protocol: psql, a multi-statement string and a rolled-back
    // block, the firewall's own refusal, then a working statement.
    let url = p.url("alice", &db);
    let (ok, out, err) = psql(
        &url,
        &[
            "-c",
            "INSERT INTO items VALUES (1, 'one'); INSERT INTO items VALUES (2, 'two')",
            "-c",
            "BEGIN; INSERT INTO items VALUES (3, 'gone'); ROLLBACK",
            "-c",
            "SELECT string_agg(name, ',' ORDER BY id) FROM items",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("one,two"), "{out}");
    let (ok, _, err) = psql(&url, &["-c", "SET ROLE postgres"]).await;
    assert!(!ok && err.contains("privileged"), "{err}");

    // Extended protocol: unnamed statements (one round trip each) ...
    let c = p.connect("alice", &db).await;
    for i in 10..30 {
        let rows = c
            .query_typed(
                "INSERT INTO items VALUES ($1, $2) RETURNING id",
                &[
                    (&i, tokio_postgres::types::Type::INT4),
                    (&format!("n{i}"), tokio_postgres::types::Type::TEXT),
                ],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), i);
    }
    // ... and named ones prepared and used inside one transaction block,
    // where pgbouncer keeps the same server connection.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    for i in 10..30 {
        let row = tx.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("n{i}"));
    }
    tx.commit().await.unwrap();
    // The firewall's refusal through the extended protocol, then work.
    let e = c
        .query_typed(
            "SELECT set_config('role', $1, false)",
            &[(&"postgres", tokio_postgres::types::Type::TEXT)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    let n: i64 = c
        .query_typed("SELECT count(*) FROM items", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(n, 22);

    // Cancel reaches the server through both.
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r.map(|_| ()), c)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled in time")
        .unwrap();
    assert_eq!(r.unwrap_err().code().map(|c| c.code()), Some("57014"));
    assert_eq!(c.query_typed("SELECT 1", &[]).await.unwrap().len(), 1);

    // What transaction mode cannot do (README, Drivers): a statement
    // prepared outside a transaction block lives on the server connection
    // that happened to run it. Here another session's open transaction
    // holds that one, so the Bind runs on the other and PostgreSQL answers
    // 26000; the firewall passes that on as it is.
    let a = p.connect("alice", &db).await;
    let b = p.connect("alice", &db).await;
    let stmt = a.prepare("SELECT count(*) FROM items").await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let e = a.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("26000"), "{e}");
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(a.query_typed("SELECT 1", &[]).await.unwrap().len(), 1);

    // A driver's extended protocol the way such setups use it: psycopg
    // with unnamed statements only.
    if have_python_module("psycopg").await {
        let env = [("DATABASE_URL", p.url("alice", &db))];
        run_script("python3", &["psycopg_bouncer.py"], ".", &env).await;
    }
    p.shutdown().await;
}
