//! Several firewalls on one PostgreSQL control database (`[state] backend =
//! "postgres"`): real daemons (`infraveil serve` children) sharing grants,
//! approvals and the audit store, each with its own audit chain.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::child::Firewall;
use common::state::{
    ctl_json, export, issue, pair_on, pending_on, start_control, state_db, state_db_on,
};
use common::{cluster, fresh_db_with, sqlstate, veilctl};
use serde_json::Value;

async fn pair(name: &str) -> (Firewall, Firewall, String) {
    let (_, url) = state_db(name);
    let (a, b) = pair_on(&url).await;
    (a, b, url)
}

async fn verify(fw: &Firewall) -> Value {
    let v = ctl_json(fw, &["audit", "verify"]).await;
    assert_eq!(v["ok"], true, "verify: {v:#}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_issued_on_one_instance_works_on_the_other_and_its_revocation_ends_sessions_there()
{
    let (a, b, _url) = pair("grants").await;
    let (id, secret) = issue(&a, "ops-agent", "agent").await;

    // At once on B, without waiting for anything.
    let (on_b, end) = b.connect_watched_as("ops-agent", &secret, "app").await;
    let n: i64 = on_b
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    let listed = ctl_json(&b, &["grants", "list"]).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == id.as_str()),
        "B lists the grant A issued: {listed}"
    );

    // Revoked on A: the session on B ends within a second.
    ctl_json(&a, &["grants", "revoke", &id]).await;
    let revoked = Instant::now();
    let (at, how) = tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("the session on B ended")
        .unwrap();
    assert!(how.starts_with("57P01") && how.contains("revoked"), "{how}");
    let after = at.saturating_duration_since(revoked);
    eprintln!("session on B ended {after:?} after the revoke on A returned");
    assert!(
        after < Duration::from_secs(1),
        "the session on B outlived the revocation on A by {after:?}"
    );

    // And nobody logs in with it on either instance.
    for fw in [&a, &b] {
        let e = fw
            .connect_as("ops-agent", &secret, "app")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "28P01", "{e}");
    }
    // A second revocation, from B, is refused: it is already revoked.
    let (ok, _, err) = veilctl(Some(&b.admin_url), &["grants", "revoke", &id]).await;
    assert!(!ok && err.contains("already revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_decided_on_one_instance_releases_the_session_waiting_on_the_other() {
    let (a, b, _url) = pair("wait").await;
    let db = fresh_db_with(
        "several_wait",
        "CREATE TABLE doomed (id int); ALTER TABLE doomed OWNER TO app_owner;",
    );
    let on_a = a.connect(&db).await;
    // alice's deployer role holds destructive statements in `wait` mode.
    let waiting = tokio::spawn(async move { on_a.batch_execute("DROP TABLE doomed").await });

    let pending = pending_on(&b).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    assert!(
        !waiting.is_finished(),
        "the DROP waits for a decision: {:?}",
        waiting.await
    );
    ctl_json(&b, &["approvals", "approve", &id, "--as", "oncall"]).await;

    let ran = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting session on A went on")
        .unwrap();
    assert!(ran.is_ok(), "{ran:?}");
    let gone = cluster()
        .psql(&db, "SELECT to_regclass('doomed') IS NULL")
        .unwrap();
    assert_eq!(gone.trim(), "t");
    // Both instances see it executed, once.
    for fw in [&a, &b] {
        let all = ctl_json(fw, &["approvals", "list", "--all"]).await;
        let r = all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .cloned()
            .unwrap_or_default();
        assert_eq!(r["status"], "executed", "{all}");
    }
    let records = export(&b).await;
    let executed: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "approval.executed" && r["approval"] == id.as_str())
        .collect();
    assert_eq!(executed.len(), 1, "{executed:?}");
    assert_eq!(executed[0]["instance"], "fw-a");
    let decided: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "approval.decided" && r["approval"] == id.as_str())
        .collect();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["instance"], "fw-b");
    verify(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_statement_approved_once_runs_once_when_sent_to_both_at_once() {
    let (a, b, _url) = pair("defer").await;
    let db = fresh_db_with(
        "several_defer",
        "CREATE TABLE t (v int); GRANT SELECT, INSERT ON t TO app_write;",
    );
    let (_, secret) = issue(&a, "ops-agent", "agent").await;
    let insert = "INSERT INTO t VALUES (1)";
    for round in 0..3 {
        let on_a = a.connect_as("ops-agent", &secret, &db).await.unwrap();
        let on_b = b.connect_as("ops-agent", &secret, &db).await.unwrap();
        // `defer`: refused now, approved later, then run by re-sending.
        let e = on_a.batch_execute(insert).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e}");
        let pending = pending_on(&b).await;
        let id = pending[0]["id"].as_str().unwrap().to_owned();
        ctl_json(&b, &["approvals", "approve", &id, "--as", "oncall"]).await;

        let (ra, rb) = tokio::join!(on_a.batch_execute(insert), on_b.batch_execute(insert));
        let ran = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(ran, 1, "round {round}: exactly one runs: {ra:?} {rb:?}");
        let refused = if ra.is_err() { ra } else { rb };
        assert_eq!(sqlstate(&refused.unwrap_err()), "42501");
        let rows = cluster().psql(&db, "SELECT count(*) FROM t").unwrap();
        assert_eq!(rows.trim(), (round + 1).to_string(), "round {round}");
        // The one refused asked again; clear it for the next round.
        for p in ctl_json(&a, &["approvals", "list"])
            .await
            .as_array()
            .unwrap()
        {
            let pid = p["id"].as_str().unwrap();
            ctl_json(&a, &["approvals", "deny", pid, "--as", "oncall"]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_instance_under_write_load_loses_no_acknowledged_record() {
    let (mut a, b, _url) = pair("kill").await;
    let db = fresh_db_with(
        "several_kill",
        "CREATE TABLE w (n int, via text); ALTER TABLE w OWNER TO app_owner;",
    );
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let c = a.connect(&db).await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            while c
                .batch_execute("INSERT INTO w VALUES (1, 'a')")
                .await
                .is_ok()
            {
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let on_b = b.connect(&db).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill_9().await;
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked > 10, "the load ran ({acked} writes)");

    // B keeps serving: the open session, and a new login.
    on_b.batch_execute("INSERT INTO w VALUES (2, 'b')")
        .await
        .unwrap();
    b.connect(&db)
        .await
        .batch_execute("INSERT INTO w VALUES (2, 'b')")
        .await
        .unwrap();

    // Every write A acknowledged has its record in A's chain.
    let records = export(&b).await;
    let from_a = records
        .iter()
        .filter(|r| {
            r["instance"] == "fw-a"
                && r["type"] == "statement"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("INSERT INTO w"))
        })
        .count() as u64;
    assert!(
        from_a >= acked,
        "A acknowledged {acked} writes but its chain records {from_a}"
    );
    let from_b = records
        .iter()
        .filter(|r| r["instance"] == "fw-b" && r["type"] == "statement")
        .count();
    assert!(from_b >= 2);
    // The merged export is in time order, and every chain verifies.
    let times: Vec<&str> = records
        .iter()
        .map(|r| r["time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "merged by time");
    let v = verify(&b).await;
    let chains: Vec<&str> = v["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["instance"].as_str().unwrap())
        .collect();
    assert_eq!(chains, ["fw-a", "fw-b"], "{v:#}");

    // The merged export verifies on its own too, each chain with its key.
    let (ok, jsonl, err) = veilctl(Some(&b.admin_url), &["audit", "export"]).await;
    assert!(ok, "{err}");
    let dir = std::env::temp_dir().join(format!("infraveil-merged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("merged.jsonl");
    std::fs::write(&file, &jsonl).unwrap();
    let pins: Vec<String> = v["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["instance"].as_str().unwrap(),
                c["public_key"].as_str().unwrap()
            )
        })
        .collect();
    let mut args = vec![
        "--output",
        "json",
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
    ];
    for p in &pins {
        args.extend(["--public-key", p.as_str()]);
    }
    let (ok, out, err) = veilctl(None, &args).await;
    assert!(ok, "merged export verifies: {out}{err}");
    let offline: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        offline["chains"].as_array().unwrap().len(),
        2,
        "{offline:#}"
    );
    // One edited record of A's is found, and named.
    let edited = jsonl.replacen("INSERT INTO w", "INSERT INTO x", 1);
    std::fs::write(&file, edited).unwrap();
    let (ok, out, _) = veilctl(None, &args).await;
    assert!(!ok, "an edited merged export fails: {out}");
    let bad: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(bad["problem"]["instance"], "fw-a", "{bad:#}");
    std::fs::remove_dir_all(&dir).unwrap();
    // A starts again on its chain, and the chains still verify.
    a.restart_and_export().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_daemons_cannot_share_an_instance_name() {
    let (_, url) = state_db("name");
    let _a = Firewall::start_shared(&url, "fw-a", "100ms").await;
    let log = match Firewall::try_start_shared(&url, "fw-a", "100ms").await {
        Ok(_) => panic!("a second fw-a started"),
        Err(log) => log,
    };
    assert!(log.contains("held by another live infraveil"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_control_database_stops_writes_and_logins_and_recovery_is_automatic() {
    let mut own = start_control();
    let (_, url) = state_db_on(&own, "lost");
    let a = Firewall::start_shared(&url, "fw-a", "100ms").await;
    let db = fresh_db_with(
        "several_lost",
        "CREATE TABLE w (n int); ALTER TABLE w OWNER TO app_owner;",
    );
    let c = a.connect(&db).await;
    c.batch_execute("INSERT INTO w VALUES (1)").await.unwrap();

    own.stop();
    // The instance notices the connection is gone.
    let mut refused = None;
    for _ in 0..100 {
        match c.batch_execute("INSERT INTO w VALUES (2)").await {
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let refused = refused.expect("writes are refused once the control database is gone");
    assert_eq!(sqlstate(&refused), "58030", "{refused}");
    // The session lives on, and reads go on.
    for _ in 0..5 {
        let n: i64 = c
            .query_one("SELECT count(*) FROM w", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
    }
    let e = a
        .connect_as("alice", common::PASSWORD, &db)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("control database"), "{message}");

    own.restart().unwrap();
    // Back on its own: writes and logins work again.
    let mut back = false;
    for _ in 0..100 {
        if c.batch_execute("INSERT INTO w VALUES (3)").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "writes work again once the control database is back");
    a.connect(&db)
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    // The reads' records, queued meanwhile, are in the chain, which
    // verifies.
    let records = export(&a).await;
    let reads = records
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("SELECT count"))
        })
        .count();
    assert_eq!(reads, 5, "every read made while it was gone is recorded");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "statement" && r["decision"] == "deny"),
        "the refused write is recorded"
    );
    verify(&a).await;
}
