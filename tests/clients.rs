//! Real drivers through the firewall: each script in `tests/clients/` does
//! what the driver's users do daily (TLS with the URL form `infraveil demo`
//! prints, parameters and types, transactions with rollback, an error then
//! a working statement, COPY, prepared statement reuse) against the
//! firewall in front of the test cluster, as `alice` in role `deployer`.
//!
//! Needs the drivers (`pip install 'psycopg[binary]' asyncpg`, and
//! `npm ci` in `tests/clients/node`). Without them the tests say so and
//! pass, unless `INFRAVEIL_REQUIRE_DRIVERS=1` (CI sets it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Whether `program -c/-e check` succeeds (in `dir`); if not, skip, or
/// fail when `INFRAVEIL_REQUIRE_DRIVERS` is set.
async fn have_driver(driver: &str, program: &str, args: &[&str], dir: &Path) -> bool {
    let found = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("INFRAVEIL_REQUIRE_DRIVERS").is_none(),
            "INFRAVEIL_REQUIRE_DRIVERS is set but {driver} is not installed for {program}"
        );
        eprintln!("skipping: {driver} is not installed for {program}; see tests/clients/README.md");
    }
    found
}

fn clients_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

async fn have_python_module(module: &str) -> bool {
    let import = format!("import {module}");
    have_driver(module, "python3", &["-c", &import], &clients_dir()).await
}

/// A firewall with TLS in front of a fresh database holding `items`.
async fn setup(name: &str) -> (Proxy, String) {
    let db = fresh_db_with(
        name,
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric, tags text[]);
         ALTER TABLE items OWNER TO app_owner;",
    );
    let p = Proxy::start(ProxyOptions {
        tls: true,
        ..ProxyOptions::enforcing()
    })
    .await;
    (p, db)
}

/// Run `program script` in `tests/clients/<dir>` with `DATABASE_URL`;
/// its output on failure, and its stderr.
async fn run_script(program: &str, dir: &str, script: &str, url: &str) -> String {
    let child = tokio::process::Command::new(program)
        .arg(script)
        .current_dir(clients_dir().join(dir))
        .env("DATABASE_URL", url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in 120s"))
        .unwrap_or_else(|e| panic!("run {program} {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Which driver and version passed, in the test's output.
    eprintln!("{stdout}");
    stderr.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3() {
    if !have_python_module("psycopg").await {
        return;
    }
    let (p, db) = setup("psycopg").await;
    let url = p.verified_url("alice", &db, PASSWORD);
    run_script("python3", ".", "psycopg_suite.py", &url).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    if !have_python_module("asyncpg").await {
        return;
    }
    let (p, db) = setup("asyncpg").await;
    let url = p.verified_url("alice", &db, PASSWORD);
    run_script("python3", ".", "asyncpg_suite.py", &url).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let dir = clients_dir().join("node");
    if !have_driver("node-postgres (pg)", "node", &["-e", "require('pg')"], &dir).await {
        return;
    }
    let (p, db) = setup("node_pg").await;
    let url = p.verified_url("alice", &db, PASSWORD);
    let stderr = run_script("node", "node", "pg_suite.js", &url).await;
    // The URL is taken as it is: no warning about what sslmode means.
    assert!(!stderr.contains("SECURITY WARNING"), "{stderr}");
    p.shutdown().await;
}
