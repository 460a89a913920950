//! Row-estimate holds against a real PostgreSQL: a limited role's DELETE /
//! UPDATE is planned first, and what the planner expects to change more
//! rows than the role allows counts as `destructive`, in the simple and the
//! extended protocol (parameters planned as bound). `WHERE id > 0` is
//! bounded to the syntax but not to the planner.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const POLICIES: &str = r#"
[roles.agent]
upstream_user = "app_write"
allow = ["read", "write"]
approve = ["destructive"]
approvers = ["oncall"]
mode = "defer"
tables = ["public.*"]
max_rows = 1000

[roles.billing]
upstream_user = "app_write"
allow = ["read", "write"]
deny = ["destructive"]
tables = ["public.*"]
max_rows_fraction = 0.1

[roles.deployer]
upstream_user = "app_write"
allow = ["read", "write"]
approve = ["destructive"]
approvers = ["oncall"]

[roles.readonly]
upstream_user = "app_read"
allow = ["read"]

[identities.alice]
kind = "human"
roles = ["deployer"]

[identities.deploy-bot]
kind = "ci"
roles = ["deployer"]

[identities.oncall]
kind = "human"
roles = ["readonly"]

[identities.ops-agent]
kind = "agent"
roles = ["agent"]

[identities.billing-svc]
kind = "service"
standing = "billing"
"#;

fn policies() -> PathBuf {
    let dir = scratch_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("limits.toml"), POLICIES).unwrap();
    dir
}

/// A database with a 10k-row `t`, analysed, that `app_write` may change.
fn db(name: &str) -> String {
    fresh_db_with(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10000) g;
         ANALYZE t;
         ALTER TABLE t OWNER TO app_owner;
         GRANT SELECT, INSERT, UPDATE, DELETE ON t TO app_write;",
    )
}

fn rows(db: &str) -> i64 {
    cluster()
        .psql(db, "SELECT count(*) FROM t")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn start() -> Proxy {
    Proxy::start(ProxyOptions {
        admin: true,
        policies_dir: Some(policies()),
        ..ProxyOptions::enforcing()
    })
    .await
}

/// The id of the request a `defer` error names.
fn request_id(e: &tokio_postgres::error::DbError) -> String {
    let m = e.message();
    let start = m.find("approval request ").expect(m) + "approval request ".len();
    m[start..].split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_the_planner_sizes_over_max_rows_is_held_as_destructive() {
    let db = db("limits_simple");
    let p = start().await;
    let agent = p.connect("ops-agent", &db).await;

    // Bounded to the syntax, every row to the planner.
    let e = refused(&agent, "DELETE FROM t WHERE id > 0").await;
    assert!(e.message().contains("destructive"), "{}", e.message());
    let detail = e.detail().unwrap_or_default();
    assert!(detail.contains("max_rows 1000"), "{detail}");
    assert!(detail.contains("public.t"), "{detail}");
    assert_eq!(rows(&db), 10000, "nothing ran");

    // One row by its key: runs at once.
    let n = agent
        .execute("DELETE FROM t WHERE id = 42", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(rows(&db), 9999);
    let n = agent
        .execute("UPDATE t SET v = 'y' WHERE id BETWEEN 1 AND 10", &[])
        .await
        .unwrap();
    assert_eq!(n, 10);

    // The approval request shows the estimate and the table's size; once
    // approved, the identical statement runs once.
    let id = request_id(&e);
    let shown = p.admin_get(&format!("/v1/approvals/{id}")).await;
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["class"], "destructive", "{shown}");
    let reason = shown["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("about 9999 rows") || reason.contains("about 10000 rows"),
        "{shown}"
    );
    assert!(
        reason.contains("kB") || reason.contains("MB"),
        "the table's size: {shown}"
    );
    let (ok, _, err) = p
        .veilctl(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    assert!(ok, "{err}");
    let n = agent
        .execute("DELETE FROM t WHERE id > 0", &[])
        .await
        .unwrap();
    assert_eq!(n, 9999);
    assert_eq!(rows(&db), 0);
    let again = refused(&agent, "DELETE FROM t WHERE id > 0").await;
    assert_ne!(
        request_id(&again),
        id,
        "a new request: the approval was spent"
    );

    // The log has the hold as destructive, with the planner's reason.
    let payloads = p.audit_payloads(&[]).await;
    let held = payloads
        .iter()
        .find(|r| r["type"] == "statement" && r["decision"] == "hold")
        .expect("a held statement record");
    assert_eq!(held["class"], "destructive", "{held}");
    assert_eq!(held["identity"], "ops-agent");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_planned_with_their_bound_values() {
    let db = db("limits_extended");
    let p = start().await;
    let agent = p.connect("ops-agent", &db).await;
    // tokio-postgres prepares a named statement, then binds it (binary
    // int4): each Bind is planned with its own values.
    let delete = agent.prepare("DELETE FROM t WHERE id > $1").await.unwrap();
    let e = agent.execute(&delete, &[&0i32]).await.expect_err("held");
    let e = e.as_db_error().expect("a server error").clone();
    assert_eq!(e.code().code(), "42501");
    assert!(e.message().contains("destructive"), "{}", e.message());
    assert_eq!(rows(&db), 10000);
    let n = agent.execute(&delete, &[&9990i32]).await.unwrap();
    assert_eq!(n, 10);
    // Text parameters through the unnamed statement, as most drivers send.
    let update = agent
        .execute("UPDATE t SET v = $1 WHERE id = $2", &[&"z", &7i32])
        .await
        .unwrap();
    assert_eq!(update, 1);
    let e = agent
        .execute("UPDATE t SET v = $1 WHERE id > $2", &[&"z", &0i32])
        .await
        .expect_err("held");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert_eq!(
        cluster()
            .psql(&db, "SELECT count(*) FROM t WHERE v = 'z'")
            .unwrap()
            .trim(),
        "1"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fraction_of_the_table_over_the_limit_is_denied_as_destructive() {
    let db = db("limits_fraction");
    let p = start().await;
    // billing-svc holds the standing `billing` role: destructive is denied.
    let svc = p.connect("billing-svc", &db).await;
    let e = refused(&svc, "UPDATE t SET v = 'y' WHERE id <= 2000").await;
    assert!(e.message().contains("destructive"), "{}", e.message());
    let detail = e.detail().unwrap_or_default();
    assert!(detail.contains("max_rows_fraction 0.1"), "{detail}");
    let n = svc
        .execute("UPDATE t SET v = 'y' WHERE id <= 500", &[])
        .await
        .unwrap();
    assert_eq!(n, 500);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_estimate_fails_closed_and_roles_without_limits_plan_nothing() {
    let db = db("limits_closed");
    let p = start().await;
    // Another session holds the table: the plan cannot take its lock in
    // time, so the write cannot be sized and is held.
    let pw = cluster().password("app_owner").unwrap();
    let (owner, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app_owner password={pw} dbname={db}",
            cluster().port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    owner
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let agent = p.connect("ops-agent", &db).await;
    let e = refused(&agent, "DELETE FROM t WHERE id = 1").await;
    let detail = e.detail().unwrap_or_default();
    assert!(detail.contains("no row estimate could be made"), "{detail}");
    owner.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        agent
            .execute("DELETE FROM t WHERE id = 1", &[])
            .await
            .unwrap(),
        1
    );

    // The side connection is the role's upstream user's, read-only.
    let side = cluster()
        .psql(
            &db,
            "SELECT usename || ' ' || (SELECT setting FROM pg_settings WHERE name = 'default_transaction_read_only') \
             FROM pg_stat_activity WHERE application_name = 'infraveil-estimate' AND datname = current_database()",
        )
        .unwrap();
    assert!(side.contains("app_write"), "{side}");
    let metrics = p.admin_get("/metrics").await;
    assert!(
        metrics.contains("infraveil_row_estimate_connections_idle 1"),
        "{metrics}"
    );
    // Idle side connections close after a while: they hold a connection
    // slot and keep the database from being dropped.
    let mut gone = false;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = cluster()
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'infraveil-estimate' AND datname = '{db}'"),
            )
            .unwrap();
        if n.trim() == "0" {
            gone = true;
            break;
        }
    }
    assert!(gone, "the idle side connection was closed");

    // A role without limits never opens one.
    let other = db_name_unlimited();
    let alice = p.connect("alice", &other).await;
    alice
        .execute("DELETE FROM t WHERE id > 0", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let side = cluster()
        .psql(
            &other,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'infraveil-estimate' AND datname = current_database()",
        )
        .unwrap();
    assert_eq!(side.trim(), "0");
    p.shutdown().await;
}

fn db_name_unlimited() -> String {
    db("limits_none")
}

fn bound(stmt: &str, value: i32) -> pgwire::messages::extendedquery::Bind {
    pgwire::messages::extendedquery::Bind::new(
        None,
        (!stmt.is_empty()).then(|| stmt.into()),
        vec![],
        vec![Some(bytes::Bytes::from(value.to_string()))],
        vec![],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bind_of_a_pipeline_is_planned_with_its_own_values() {
    let db = db("limits_pipeline");
    let p = start().await;
    let mut raw = Raw::login(p.port, "ops-agent", &db).await;
    // Small, then large, then small again, before one Sync: the second is
    // held (defer: an error), PostgreSQL skips the rest to Sync, and the
    // implicit transaction they share rolls the first back, exactly as for
    // any failed message.
    raw.send(&parse("d", "DELETE FROM t WHERE id > $1")).await;
    raw.send(&bound("d", 9995)).await;
    raw.send(&execute()).await;
    raw.send(&bound("d", 0)).await;
    raw.send(&execute()).await;
    raw.send(&bound("d", 9990)).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501"], "one refusal");
    assert_eq!(rows(&db), 10000, "the first was rolled back with the block");
    // After Sync the statement is usable again, with a value in bounds.
    raw.send(&bound("d", 9990)).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert!(codes.is_empty(), "{codes:?}");
    assert_eq!(rows(&db), 9990);
    // Each Bind had its own plan: the log has the one hold as destructive.
    let payloads = p.audit_payloads(&[]).await;
    let holds: Vec<_> = payloads
        .iter()
        .filter(|r| r["type"] == "approval.requested")
        .collect();
    assert_eq!(
        holds.len(),
        1,
        "the held Bind asked for approval: {payloads:?}"
    );
    assert_eq!(holds[0]["class"], "destructive");
    assert_eq!(holds[0]["identity"], "ops-agent");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_ctes_and_strings_of_statements_are_planned_too() {
    let db = db("limits_forms");
    let p = start().await;
    let agent = p.connect("ops-agent", &db).await;
    for sql in [
        "WITH gone AS (DELETE FROM t WHERE id > 0 RETURNING id) SELECT count(*) FROM gone",
        "MERGE INTO t USING (SELECT g FROM generate_series(1, 5000) g) s ON t.id = s.g \
         WHEN MATCHED THEN UPDATE SET v = 'm'",
        "SELECT 1; UPDATE t SET v = 'u' WHERE id > 10; SELECT 2",
        "UPDATE t SET v = 'a' WHERE id = 1; UPDATE t SET v = 'b' WHERE id > 1",
    ] {
        let e = refused(&agent, sql).await;
        assert!(
            e.message().contains("destructive"),
            "{sql}: {}",
            e.message()
        );
    }
    assert_eq!(
        cluster()
            .psql(&db, "SELECT count(*) FROM t WHERE v <> 'x'")
            .unwrap()
            .trim(),
        "0",
        "nothing of a refused string ran"
    );
    // The same forms, small, run.
    agent
        .batch_execute(
            "WITH gone AS (DELETE FROM t WHERE id > 9990 RETURNING id) SELECT count(*) FROM gone; \
             UPDATE t SET v = 'a' WHERE id = 1; \
             MERGE INTO t USING (SELECT 2 AS g) s ON t.id = s.g WHEN MATCHED THEN UPDATE SET v = 'm'",
        )
        .await
        .unwrap();
    assert_eq!(rows(&db), 9990);
    p.shutdown().await;
}

/// The self-service check and proposals (what `infraveil mcp` asks) see
/// the row estimate too: what a session would get, before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_service_check_sizes_writes_as_a_session_would() {
    let db = db("limits_self");
    let p = start().await;
    let secret = p.issue("ops-agent", "agent").await;
    let http = reqwest::Client::new();
    let check = |sql: &str| {
        http.post(format!("{}/v1/self/check", p.admin_url.as_deref().unwrap()))
            .basic_auth("ops-agent", Some(&secret))
            .json(&serde_json::json!({"sql": sql, "database": db}))
            .send()
    };
    let big: serde_json::Value = check("DELETE FROM t WHERE id > 0")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(big["decision"], "hold", "{big}");
    assert_eq!(big["class"], "destructive", "{big}");
    assert!(
        big["reason"].as_str().unwrap().contains("max_rows 1000"),
        "{big}"
    );
    let small: serde_json::Value = check("DELETE FROM t WHERE id = 42")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(small["decision"], "allow", "{small}");
    assert_eq!(rows(&db), 10000, "a check runs nothing");
    p.shutdown().await;
}
