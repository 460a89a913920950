//! Attacks on the shared state (`[state] backend = "postgres"`): several
//! `infraveil serve` children on one control database, and the control
//! database edited, cut off, frozen or raced under them. Each test asserts
//! the safe outcome; those the firewall fails are ignored with the finding.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::child::Firewall;
use common::state::{
    STATE_PASSWORD, control, ctl_json, ctl_sql, export, issue, pair_on, pending_on, start_control,
    state_db, state_db_on, url_via,
};
use common::{cluster, fresh_db_with, sqlstate, veilctl};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn verify_json(fw: &Firewall) -> Value {
    let (_, out, err) = veilctl(
        Some(&fw.admin_url),
        &["--output", "json", "audit", "verify"],
    )
    .await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("verify: {e}: {out}{err}"))
}

/// Some writes through `fw`, in separate batches (so its chain has several
/// chunks).
async fn some_writes(fw: &Firewall, db: &str, n: usize) {
    let c = fw.connect(db).await;
    for i in 0..n {
        c.batch_execute(&format!("INSERT INTO w VALUES ({i})"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn write_db(name: &str) -> String {
    fresh_db_with(
        name,
        "CREATE TABLE w (n int); ALTER TABLE w OWNER TO app_owner;",
    )
}

// A TCP relay in front of the control database, to cut one instance off
// (or freeze it: connections accepted, nothing answered) while the other
// stays connected.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Open,
    /// Connections held open, nothing passed either way.
    Frozen,
    /// Every connection dropped; new ones closed at once.
    Cut,
}

struct Relay {
    port: u16,
    mode: watch::Sender<Mode>,
}

impl Relay {
    async fn start(to: u16, mode: Mode) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(mode);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let rx = rx.clone();
                tokio::spawn(relay_one(client, to, rx));
            }
        });
        Relay { port, mode: tx }
    }

    fn set(&self, m: Mode) {
        self.mode.send_replace(m);
    }
}

async fn relay_one(mut client: TcpStream, to: u16, mut rx: watch::Receiver<Mode>) {
    loop {
        let m = *rx.borrow_and_update();
        match m {
            Mode::Cut => return,
            Mode::Frozen => {
                // Hold the socket, say nothing, until the mode changes.
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Mode::Open => break,
        }
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)).await else {
        return;
    };
    loop {
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut server) => { let _ = r; return; }
            c = rx.changed() => {
                if c.is_err() { return; }
                let m = *rx.borrow_and_update();
                match m {
                    Mode::Cut => return,
                    Mode::Open => continue,
                    Mode::Frozen => {
                        // Stop passing bytes, keep both sockets open.
                        loop {
                            if rx.changed().await.is_err() { return; }
                            let m = *rx.borrow_and_update();
                            match m {
                                Mode::Cut => return,
                                Mode::Open => break,
                                Mode::Frozen => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

// 1. defer runs exactly once across instances.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_approval_runs_once_under_twelve_concurrent_sessions_on_both() {
    let (_, url) = state_db("defer12");
    let (a, b) = pair_on(&url).await;
    let db = fresh_db_with(
        "atk_defer12",
        "CREATE TABLE t (v int); GRANT SELECT, INSERT ON t TO app_write;",
    );
    let (_, secret) = issue(&a, "ops-agent", "agent").await;
    let insert = "INSERT INTO t VALUES (1)";
    let first = a.connect_as("ops-agent", &secret, &db).await.unwrap();
    let e = first.batch_execute(insert).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let pending = pending_on(&b).await;
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    ctl_json(&b, &["approvals", "approve", &id, "--as", "oncall"]).await;

    let mut clients = Vec::new();
    for i in 0..12 {
        let fw = if i % 2 == 0 { &a } else { &b };
        clients.push(Arc::new(
            fw.connect_as("ops-agent", &secret, &db).await.unwrap(),
        ));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clients.len()));
    let runs: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, barrier) = (c.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.batch_execute(insert).await
            })
        })
        .collect();
    let mut ok = 0;
    for r in runs {
        match r.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(sqlstate(&e), "42501", "{e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one of the twelve ran");
    let rows = cluster().psql(&db, "SELECT count(*) FROM t").unwrap();
    assert_eq!(rows.trim(), "1");
    let records = export(&a).await;
    let executed = records
        .iter()
        .filter(|r| r["type"] == "approval.executed" && r["approval"] == id.as_str())
        .count();
    assert_eq!(executed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_approval_runs_once_when_the_same_statement_races_it_on_the_other_instance() {
    let (_, url) = state_db("waitrace");
    let (a, b) = pair_on(&url).await;
    for (round, delay) in [0u64, 10, 40].into_iter().enumerate() {
        let db = fresh_db_with(
            &format!("atk_waitrace{round}"),
            "CREATE TABLE t (v int); CREATE TABLE runs (at timestamptz DEFAULT now()); \
             CREATE FUNCTION ran() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO runs DEFAULT VALUES; RETURN NULL; END $$; \
             CREATE TRIGGER ran AFTER TRUNCATE ON t FOR EACH STATEMENT EXECUTE FUNCTION ran(); \
             ALTER TABLE t OWNER TO app_owner; ALTER TABLE runs OWNER TO app_owner;",
        );
        let on_a = a.connect(&db).await;
        let first = tokio::spawn(async move { on_a.batch_execute("TRUNCATE t").await });
        let id = pending_on(&b).await[0]["id"].as_str().unwrap().to_owned();
        let on_b = b.connect(&db).await;
        let approve_args = ["approvals", "approve", id.as_str(), "--as", "oncall"];
        let (approved, second) = tokio::join!(ctl_json(&b, &approve_args), async {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let on_b = Arc::new(on_b);
            let c = on_b.clone();
            let run = tokio::spawn(async move { c.batch_execute("TRUNCATE t").await });
            // If it asked anew, deny that so it returns.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            for p in ctl_json(&a, &["approvals", "list"])
                .await
                .as_array()
                .unwrap()
            {
                let pid = p["id"].as_str().unwrap();
                let _ = veilctl(
                    Some(&a.admin_url),
                    &["approvals", "deny", pid, "--as", "oncall"],
                )
                .await;
            }
            tokio::time::timeout(Duration::from_secs(10), run).await
        });
        let _ = approved;
        let first = tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("the first session went on")
            .unwrap();
        let second = second.expect("the second session went on").unwrap();
        let runs = cluster().psql(&db, "SELECT count(*) FROM runs").unwrap();
        assert_eq!(
            runs.trim(),
            "1",
            "round {round}: one approval, one run: first {first:?} second {second:?}"
        );
        assert!(
            first.is_ok() ^ second.is_ok(),
            "round {round}: {first:?} {second:?}"
        );
    }
}

// 2. Decisions are conditional.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_on_one_and_deny_on_the_other_at_once_one_wins_and_the_session_obeys_it() {
    let (_, url) = state_db("race");
    let (a, b) = pair_on(&url).await;
    for round in 0..3 {
        let db = fresh_db_with(
            &format!("atk_race{round}"),
            "CREATE TABLE doomed (id int); ALTER TABLE doomed OWNER TO app_owner;",
        );
        let on_a = a.connect(&db).await;
        let waiting = tokio::spawn(async move { on_a.batch_execute("DROP TABLE doomed").await });
        let pending = pending_on(&b).await;
        let id = pending[0]["id"].as_str().unwrap().to_owned();
        // Make sure A knows of it too.
        pending_on(&a).await;
        let approve_args = ["approvals", "approve", id.as_str(), "--as", "oncall"];
        let deny_args = ["approvals", "deny", id.as_str(), "--as", "oncall"];
        let (approve, deny) = tokio::join!(
            veilctl(Some(&a.admin_url), &approve_args),
            veilctl(Some(&b.admin_url), &deny_args),
        );
        assert!(
            approve.0 ^ deny.0,
            "round {round}: exactly one decision wins: approve {approve:?} deny {deny:?}"
        );
        let ran = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting session went on")
            .unwrap();
        let gone = cluster()
            .psql(&db, "SELECT to_regclass('doomed') IS NULL")
            .unwrap();
        if approve.0 {
            assert!(ran.is_ok(), "round {round}: approved but {ran:?}");
            assert_eq!(gone.trim(), "t");
        } else {
            assert!(ran.is_err(), "round {round}: denied but it ran");
            assert_eq!(gone.trim(), "f");
        }
        // Decided: it cannot be decided again, on either.
        for fw in [&a, &b] {
            let (ok, _, err) = veilctl(
                Some(&fw.admin_url),
                &["approvals", "approve", &id, "--as", "oncall"],
            )
            .await;
            assert!(!ok, "round {round}: re-decided: {err}");
        }
        let records = export(&a).await;
        let decided = records
            .iter()
            .filter(|r| r["type"] == "approval.decided" && r["approval"] == id.as_str())
            .count();
        assert_eq!(decided, 1, "round {round}: one decision recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_cannot_be_approved_on_the_other_instance() {
    let (db_name, url) = state_db("expired");
    let (a, b) = pair_on(&url).await;
    let db = fresh_db_with(
        "atk_expired",
        "CREATE TABLE t (v int); GRANT SELECT, INSERT ON t TO app_write;",
    );
    let (_, secret) = issue(&a, "ops-agent", "agent").await;
    let c = a.connect_as("ops-agent", &secret, &db).await.unwrap();
    let e = c
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let id = pending_on(&b).await[0]["id"].as_str().unwrap().to_owned();
    // Its time passes (as another instance's clock would have it).
    let past = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 1000) as u64;
    ctl_sql(
        &db_name,
        &format!(
            "UPDATE infraveil_docs SET doc = jsonb_set(doc, '{{expires_at}}', '{past}'), rev = rev + 1 \
             WHERE kind = 'approvals' AND id = '{id}'"
        ),
    );
    let (ok, _, err) = veilctl(
        Some(&b.admin_url),
        &["approvals", "approve", &id, "--as", "oncall"],
    )
    .await;
    assert!(!ok, "an expired request was approved: {err}");
    let e = c
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let rows = cluster().psql(&db, "SELECT count(*) FROM t").unwrap();
    assert_eq!(rows.trim(), "0");
}

// 3. Revocation while an instance cannot hear it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_b_missed_while_cut_off_ends_its_sessions_when_it_is_back() {
    let (db_name, url) = state_db("missed");
    let relay = Relay::start(control().port, Mode::Open).await;
    let a = Firewall::start_shared(&url, "fw-a", "100ms").await;
    let b = Firewall::start_shared(&url_via(relay.port, &db_name), "fw-b", "100ms").await;
    let (id, secret) = issue(&a, "ops-agent", "agent").await;
    let (on_b, end) = b.connect_watched_as("ops-agent", &secret, "app").await;
    on_b.query_one("SELECT 1", &[]).await.unwrap();

    relay.set(Mode::Cut);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl_json(&a, &["grants", "revoke", &id]).await;
    // While B is cut off it cannot know; nobody new logs in there.
    let e = b.connect_as("ops-agent", &secret, "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.set(Mode::Open);
    let back = Instant::now();
    let (at, how) = tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("the session on B ended once B was back")
        .unwrap();
    assert!(how.starts_with("57P01"), "{how}");
    eprintln!(
        "ended {:?} after B's control connection was back",
        at.saturating_duration_since(back)
    );
    // Logins with it are refused on both.
    for fw in [&a, &b] {
        let mut last = None;
        for _ in 0..50 {
            match fw.connect_as("ops-agent", &secret, "app").await {
                Err(e) if sqlstate(&e) == "57P03" => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => {
                    last = Some(sqlstate(&e));
                    break;
                }
                Ok(_) => panic!("a revoked grant logged in"),
            }
        }
        assert_eq!(last.as_deref(), Some("28P01"));
    }
}

/// A grant in use on B; every firewall connection to the control database
/// terminated at once, and the grant revoked on A straight after (A
/// reconnects for it; B's listener may not be back yet). The first
/// revoke's answer, and the end of B's session.
async fn revoke_right_after_terminating_all(
    name: &str,
) -> (
    Firewall,
    Firewall,
    String,
    (bool, String, String),
    tokio::sync::oneshot::Receiver<(Instant, String)>,
) {
    let (db_name, url) = state_db(name);
    let (a, b) = pair_on(&url).await;
    let (id, secret) = issue(&a, "ops-agent", "agent").await;
    let (on_b, end) = b.connect_watched_as("ops-agent", &secret, "app").await;
    on_b.query_one("SELECT 1", &[]).await.unwrap();
    std::mem::forget(on_b);
    ctl_sql(
        &db_name,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'infraveil' AND datname = current_database()",
    );
    let first = veilctl(Some(&a.admin_url), &["grants", "revoke", &id]).await;
    eprintln!("first revoke: {first:?}");
    (a, b, id, first, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_sent_while_bs_listener_was_terminated_is_caught_up() {
    let (a, _b, id, first, end) = revoke_right_after_terminating_all("terminated").await;
    if !first.0 {
        // Stored or not, it is revoked once asked again.
        let mut done = false;
        for _ in 0..50 {
            let (ok, _, err) = veilctl(Some(&a.admin_url), &["grants", "revoke", &id]).await;
            if ok || err.contains("already revoked") {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(done);
    }
    let (_, how) = tokio::time::timeout(Duration::from_secs(7), end)
        .await
        .expect("the session on B ended within the catch-up period")
        .unwrap();
    assert!(how.starts_with("57P01"), "{how}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reported_as_failed_is_not_in_force_unaudited() {
    let (db_name, url) = state_db("revokefail");
    let (a, b) = pair_on(&url).await;
    let (id, secret) = issue(&a, "ops-agent", "agent").await;
    let (on_b, end) = b.connect_watched_as("ops-agent", &secret, "app").await;
    on_b.query_one("SELECT 1", &[]).await.unwrap();
    // The audit records cannot be stored now (documents still can).
    ctl_sql(&db_name, "REVOKE INSERT ON infraveil_audit FROM veil_state");
    let _ = a.connect_as("alice", common::PASSWORD, "app").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = veilctl(Some(&a.admin_url), &["grants", "revoke", &id]).await;
    let ended = tokio::time::timeout(Duration::from_secs(3), end)
        .await
        .is_ok();
    ctl_sql(&db_name, "GRANT INSERT ON infraveil_audit TO veil_state");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = export(&a).await;
    let recorded = records
        .iter()
        .any(|r| r["type"] == "grant.revoked" && r["grant"] == id.as_str());
    eprintln!("first revoke {first:?} recorded={recorded} B's session ended={ended}");
    assert!(
        first.0 || !ended,
        "told it failed ({first:?}), yet it took effect"
    );
    assert!(
        recorded || !ended,
        "the revocation took effect (B's session ended) but grant.revoked is not in the log"
    );
}

// 4. Audit.

/// A pair with some writes on both chains, then B gone (so its chain stays
/// as it is while it is edited).
async fn chains_then_b_gone(name: &str) -> (String, Firewall, Firewall) {
    let (db_name, url) = state_db(name);
    let (a, mut b) = pair_on(&url).await;
    let db = write_db(&format!("atk_{name}"));
    some_writes(&a, &db, 5).await;
    some_writes(&b, &db, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill_9().await;
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], true, "{v:#}");
    let chunks: i64 = ctl_sql(
        &db_name,
        "SELECT count(*) FROM infraveil_audit WHERE instance = 'fw-b'",
    )
    .parse()
    .unwrap();
    assert!(chunks >= 3, "B's chain has several chunks ({chunks})");
    (db_name, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_one_instance_detects_an_edited_chunk_of_anothers_chain() {
    let (db_name, a, _b) = chains_then_b_gone("edit").await;
    // Flip one byte in the middle of one of B's chunks.
    ctl_sql(
        &db_name,
        "UPDATE infraveil_audit SET chunk = set_byte(chunk, length(chunk) / 2, get_byte(chunk, length(chunk) / 2) # 1) \
         WHERE instance = 'fw-b' AND first_seq = (SELECT min(first_seq) FROM infraveil_audit WHERE instance = 'fw-b') + 0",
    );
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], false, "an edited chunk verified: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_one_instance_detects_a_chunk_deleted_from_the_middle_of_anothers_chain() {
    let (db_name, a, _b) = chains_then_b_gone("middle").await;
    ctl_sql(
        &db_name,
        "DELETE FROM infraveil_audit WHERE instance = 'fw-b' AND first_seq = \
         (SELECT first_seq FROM infraveil_audit WHERE instance = 'fw-b' ORDER BY first_seq OFFSET 1 LIMIT 1)",
    );
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], false, "a gap verified: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_one_instance_detects_anothers_key_swapped() {
    let (db_name, a, _b) = chains_then_b_gone("key").await;
    ctl_sql(
        &db_name,
        "UPDATE infraveil_instances SET public_key = (SELECT public_key FROM infraveil_instances WHERE id = 'fw-a') \
         WHERE id = 'fw-b'",
    );
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], false, "B's chain verified under A's key: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_one_instance_detects_the_newest_chunks_of_anothers_chain_deleted() {
    let (db_name, a, _b) = chains_then_b_gone("tail").await;
    ctl_sql(
        &db_name,
        "DELETE FROM infraveil_audit WHERE instance = 'fw-b' AND first_seq = \
         (SELECT max(first_seq) FROM infraveil_audit WHERE instance = 'fw-b')",
    );
    let v = verify_json(&a).await;
    assert_eq!(
        v["ok"], false,
        "B's chain, its newest chunk gone, verified: {v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_one_instance_notices_anothers_chain_unregistered() {
    let (db_name, a, _b) = chains_then_b_gone("unreg").await;
    ctl_sql(
        &db_name,
        "DELETE FROM infraveil_instances WHERE id = 'fw-b'",
    );
    let v = verify_json(&a).await;
    let listed = v["chains"]
        .as_array()
        .map(|c| c.iter().any(|c| c["instance"] == "fw-b"))
        .unwrap_or(false);
    assert!(
        v["ok"] == false || listed,
        "B's chain (still in infraveil_audit) vanished from verify without a word: {v:#}"
    );
    let records = export(&a).await;
    assert!(
        records.iter().any(|r| r["instance"] == "fw-b"),
        "B's records vanished from the export"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_writers_connection_under_load_loses_no_acknowledged_write() {
    let (db_name, url) = state_db("termwriter");
    let a = Arc::new(Firewall::start_shared(&url, "fw-a", "100ms").await);
    let db = fresh_db_with(
        "atk_termwriter",
        "CREATE TABLE w (n int); ALTER TABLE w OWNER TO app_owner;",
    );
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (a, db) = (a.clone(), db.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            // Sessions the firewall ended (a write whose record could not
            // be made durable ends its session: safe, but counted).
            let mut closed = 0u32;
            let mut c = a.connect(&db).await;
            while !stop.load(Ordering::Relaxed) {
                match c.batch_execute("INSERT INTO w VALUES (1)").await {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        let s = sqlstate(&e);
                        if c.is_closed() {
                            closed += 1;
                            loop {
                                match a.connect_as("alice", common::PASSWORD, &db).await {
                                    Ok(n) => {
                                        c = n;
                                        break;
                                    }
                                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                                }
                            }
                            continue;
                        }
                        assert!(s == "58030" || s == "57P03", "{e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            closed
        }));
    }
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ctl_sql(
            &db_name,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'infraveil' AND datname = current_database() AND query LIKE '%infraveil_audit%'",
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut closed = 0;
    for w in writers {
        closed += w.await.unwrap();
    }
    eprintln!("sessions ended by the firewall on a control-connection blip: {closed}");
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked > 10, "{acked}");
    let rows: u64 = cluster()
        .psql(&db, "SELECT count(*) FROM w")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let records = export(&a).await;
    let allowed = records
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && r["decision"] != "deny"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("INSERT INTO w"))
        })
        .count() as u64;
    assert!(acked <= rows, "{acked} acked, {rows} rows");
    assert!(
        allowed >= rows,
        "{rows} rows written but {allowed} allowed writes recorded"
    );
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], true, "{v:#}");
}

/// `fw-x` behind a relay, with some writes; then cut off (its lock
/// connection ends with it) and kept off while it serves 3 reads.
async fn cut_off_x(
    name: &str,
) -> (
    String,
    String,
    Relay,
    Firewall,
    tokio_postgres::Client,
    String,
) {
    let (db_name, url) = state_db(name);
    let relay = Relay::start(control().port, Mode::Open).await;
    let a = Firewall::start_shared(&url_via(relay.port, &db_name), "fw-x", "100ms").await;
    let db = write_db(&format!("atk_{name}"));
    some_writes(&a, &db, 3).await;
    let on_a = a.connect(&db).await;
    relay.set(Mode::Cut);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        on_a.query_one("SELECT count(*) FROM w", &[]).await.unwrap();
    }
    (db_name, url, relay, a, on_a, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_control_database_under_write_load_loses_no_acknowledged_write() {
    let mut own = start_control();
    let (_, url) = state_db_on(&own, "restart");
    let a = Arc::new(Firewall::start_shared(&url, "fw-r", "100ms").await);
    let db = write_db("atk_restart");
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (a, db, acked, stop) = (a.clone(), db.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut c = None;
            while !stop.load(Ordering::Relaxed) {
                if c.as_ref()
                    .is_none_or(|c: &tokio_postgres::Client| c.is_closed())
                {
                    c = a.connect_as("alice", common::PASSWORD, &db).await.ok();
                    if c.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
                match c
                    .as_ref()
                    .unwrap()
                    .batch_execute("INSERT INTO w VALUES (1)")
                    .await
                {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = acked.load(Ordering::SeqCst);
    own.restart().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.load(Ordering::SeqCst);
    assert!(
        acked > before,
        "writes went on after the restart ({before} then {acked})"
    );
    let rows: u64 = cluster()
        .psql(&db, "SELECT count(*) FROM w")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let records = export(&a).await;
    let allowed = records
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && r["decision"] != "deny"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("INSERT INTO w"))
        })
        .count() as u64;
    eprintln!("acked {acked}, rows {rows}, allowed writes recorded {allowed}");
    assert!(acked <= rows);
    assert!(allowed >= rows, "{rows} rows written, {allowed} recorded");
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], true, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_with_the_name_but_another_key_is_refused_after_the_lock_is_lost() {
    let (_, url, _relay, _a, _on_a, _) = cut_off_x("forkkey").await;
    let log = Firewall::try_start_shared(&url, "fw-x", "100ms")
        .await
        .err()
        .expect("a daemon with another key took over fw-x's chain");
    assert!(log.contains("signed with key"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "finding: an instance that regains its name after a stand-in wrote under it keeps its stale chain head; its queued records are lost and it fails for good"]
async fn a_stand_in_under_the_name_while_it_was_cut_off_neither_forks_the_chain_nor_loses_its_reads()
 {
    let (_, url, relay, a, on_a, db) = cut_off_x("fork").await;
    // A stand-in (same name, same key) takes the name and writes under it.
    let mut x2 = Firewall::try_start_shared_as(&url, "fw-x", "100ms", &a)
        .await
        .unwrap_or_else(|l| panic!("the stand-in did not start: {l}"));
    some_writes(&x2, &db, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A comes back while x2 holds the name: it must not write under it.
    relay.set(Mode::Open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e = on_a
        .batch_execute("INSERT INTO w VALUES (100)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "58030", "{e}");
    // x2 goes; A takes its name back.
    x2.kill_9().await;
    let mut wrote = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match on_a.batch_execute("INSERT INTO w VALUES (101)").await {
            Ok(()) => {
                wrote = Some(Ok(()));
                break;
            }
            Err(e) => wrote = Some(Err(format!("{} {e}", sqlstate(&e)))),
        }
    }
    eprintln!("A writing after x2 left: {wrote:?}");
    for l in a.log_text().lines().filter(|l| l.contains("ERROR")) {
        eprintln!("daemon A: {l}");
    }
    let v = verify_json(&a).await;
    eprintln!("verify: {v:#}");
    assert_eq!(v["ok"], true, "the chain under fw-x forked: {v:#}");
    // The reads A let through while cut off are in it, and A works again.
    let records = export(&a).await;
    let reads = records
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && r["instance"] == "fw-x"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("SELECT count"))
        })
        .count();
    assert_eq!(reads, 3, "reads A allowed while cut off are recorded");
    assert!(matches!(wrote, Some(Ok(()))), "A works again: {wrote:?}");
}

// 5. Losing the control database.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_bound_refuses_every_statement_when_full_and_nothing_is_lost() {
    let (db_name, url) = state_db("queue");
    let relay = Relay::start(control().port, Mode::Open).await;
    let a = Firewall::try_start_shared_with(
        &url_via(relay.port, &db_name),
        "fw-q",
        "100ms",
        "queue = 5",
    )
    .await
    .unwrap_or_else(|l| panic!("{l}"));
    let _ = url;
    let db = write_db("atk_queue");
    let c = a.connect(&db).await;
    c.batch_execute("INSERT INTO w VALUES (1)").await.unwrap();
    relay.set(Mode::Cut);
    let mut ok_reads = 0;
    let mut full = None;
    for _ in 0..40 {
        match c.query_one("SELECT count(*) FROM w", &[]).await {
            Ok(_) => ok_reads += 1,
            Err(e) => {
                full = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let full = full.expect("reads are refused once the queue is full");
    assert!(ok_reads <= 8, "{ok_reads} reads went on past queue = 5");
    eprintln!("{ok_reads} reads, then {full}");
    // Every statement is refused now.
    for sql in ["SELECT 1", "INSERT INTO w VALUES (2)"] {
        assert!(
            c.batch_execute(sql).await.is_err(),
            "{sql} ran with the queue full"
        );
    }
    relay.set(Mode::Open);
    let mut back = false;
    for _ in 0..100 {
        if c.batch_execute("INSERT INTO w VALUES (3)").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "writes work again");
    let records = export(&a).await;
    let reads = records
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && r["decision"] != "deny"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("SELECT count"))
        })
        .count();
    assert_eq!(reads, ok_reads, "every read that ran is recorded");
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let v = verify_json(&a).await;
    assert_eq!(v["ok"], true, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_database_that_never_answers_at_start_is_an_error_not_a_hang() {
    let (db_name, _) = state_db("silent");
    let relay = Relay::start(control().port, Mode::Frozen).await;
    let started = Instant::now();
    let r = Firewall::try_start_shared(&url_via(relay.port, &db_name), "fw-s", "100ms").await;
    let log = match r {
        Ok(_) => panic!("started on a control database that never answers"),
        Err(log) => log,
    };
    eprintln!("{:?}: {log}", started.elapsed());
    assert!(
        log.contains("timed out") || log.contains("control database"),
        "it said why: {log}"
    );
    assert!(
        !log.contains(STATE_PASSWORD),
        "the password is in the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_control_database_answers_every_login_within_the_deadline() {
    let (db_name, _) = state_db("frozen");
    let relay = Relay::start(control().port, Mode::Open).await;
    let a = Firewall::start_shared(&url_via(relay.port, &db_name), "fw-f", "100ms").await;
    let db = write_db("atk_frozen");
    a.connect(&db)
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    relay.set(Mode::Frozen);
    let a = Arc::new(a);
    let mut worst = Duration::ZERO;
    for wave in 0..2 {
        worst = worst.max(login_wave(&a, &db, wave).await);
    }
    relay.set(Mode::Open);
    assert!(
        worst < Duration::from_secs(12),
        "the slowest login took {worst:?}"
    );
}

/// Six logins at once; how long the slowest took to be answered.
async fn login_wave(a: &Arc<Firewall>, db: &str, wave: usize) -> Duration {
    let started = Instant::now();
    let logins: Vec<_> = (0..6)
        .map(|_| {
            let (a, db) = (a.clone(), db.to_owned());
            tokio::spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    a.connect_as("alice", common::PASSWORD, &db),
                )
                .await;
                (
                    started.elapsed(),
                    r.map(|r| r.map(|_| ()).map_err(|e| sqlstate(&e))),
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for l in logins {
        results.push(l.await.unwrap());
    }
    eprintln!("wave {wave}: {results:?}");
    let mut worst = Duration::ZERO;
    for (took, r) in results {
        worst = worst.max(took);
        match r {
            Ok(Err(s)) => assert_eq!(s, "57P03", "wave {wave}: answered after {took:?}"),
            Ok(Ok(())) => {}
            Err(_) => panic!("a login hung for 30 s"),
        }
    }
    worst
}

// 6. Anything else.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_in_the_state_url_is_not_silently_dropped() {
    let (_, url) = state_db("ssl");
    // The control cluster has no TLS: a client that requires it must fail.
    let r = Firewall::try_start_shared(&format!("{url}?sslmode=require"), "fw-t", "100ms").await;
    assert!(
        r.is_err(),
        "started in plaintext although state.url says sslmode=require"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_to_a_control_database_without_tls_is_refused() {
    let (_, url) = state_db("tlsreq");
    let r = Firewall::try_start_shared_with(&url, "fw-t", "100ms", "tls = \"require\"").await;
    assert!(r.is_err(), "started in plaintext although tls = require");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_names_that_could_inject_are_refused_by_config() {
    let (_, url) = state_db("inject");
    for name in ["x'; DROP TABLE infraveil_audit; --", "a b", ""] {
        let r = Firewall::try_start_shared(&url, &name.replace('"', ""), "100ms").await;
        let log = r.err().unwrap_or_else(|| panic!("{name:?} was accepted"));
        assert!(log.contains("state.instance"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instance_names_with_one_hashtext_can_both_run() {
    let (_, url) = state_db("hash");
    let pair = ctl_sql(
        "postgres",
        "SELECT min(n) || ' ' || max(n) FROM (SELECT 'n' || g AS n, hashtext('n' || g) AS h \
         FROM generate_series(1, 300000) g) s GROUP BY h HAVING count(*) > 1 LIMIT 1",
    );
    let (x, y) = pair
        .split_once(' ')
        .expect("a hashtext collision among 300000 names");
    let _first = Firewall::start_shared(&url, x, "100ms").await;
    let second = Firewall::try_start_shared(&url, y, "100ms").await;
    assert!(
        second.is_ok(),
        "{y} was refused because {x} runs: {}",
        second.err().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_migrating_an_empty_database_at_once_all_start() {
    let (db_name, url) = state_db("migrate3");
    let (a, b, c) = tokio::join!(
        Firewall::try_start_shared(&url, "m-1", "100ms"),
        Firewall::try_start_shared(&url, "m-2", "100ms"),
        Firewall::try_start_shared(&url, "m-3", "100ms"),
    );
    for r in [&a, &b, &c] {
        assert!(r.is_ok(), "{:?}", r.as_ref().err());
    }
    assert_eq!(
        ctl_sql(
            &db_name,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM infraveil_schema"
        ),
        "1,2",
        "each migration applied once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let (db_name, url) = state_db("newer");
    drop(Firewall::start_shared(&url, "n-1", "100ms").await);
    ctl_sql(
        &db_name,
        "INSERT INTO infraveil_schema (version) VALUES (99)",
    );
    let log = Firewall::try_start_shared(&url, "n-2", "100ms")
        .await
        .err()
        .expect("started on a newer schema");
    assert!(log.contains("newer than this infraveil"), "{log}");
    assert!(!log.contains(STATE_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_role_without_privileges_is_refused_at_start_without_the_password() {
    let (db_name, _) = state_db("nopriv");
    // Migrated by the owner first, then used by a role with no rights.
    drop(
        Firewall::start_shared(
            &format!(
                "postgres://veil_state:{STATE_PASSWORD}@127.0.0.1:{}/{db_name}",
                control().port
            ),
            "p-1",
            "100ms",
        )
        .await,
    );
    ctl_sql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE veil_nopriv LOGIN PASSWORD 'nopriv-secret-3e'; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    let url = format!(
        "postgres://veil_nopriv:nopriv-secret-3e@127.0.0.1:{}/{db_name}",
        control().port
    );
    let log = Firewall::try_start_shared(&url, "p-2", "100ms")
        .await
        .err()
        .expect("started without privileges on the control database");
    assert!(log.contains("permission denied"), "{log}");
    assert!(!log.contains("nopriv-secret-3e"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_failed_on_one_instance_does_not_release_the_session_on_the_other() {
    let (db_name, url) = state_db("failedwait");
    let (a, b) = pair_on(&url).await;
    let db = fresh_db_with(
        "atk_failedwait",
        "CREATE TABLE doomed (id int); ALTER TABLE doomed OWNER TO app_owner;",
    );
    let on_a = a.connect(&db).await;
    let waiting = tokio::spawn(async move { on_a.batch_execute("DROP TABLE doomed").await });
    let id = pending_on(&b).await[0]["id"].as_str().unwrap().to_owned();
    // B's audit records (only B's) cannot be stored now.
    ctl_sql(
        &db_name,
        "CREATE FUNCTION no_b() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.instance = 'fw-b' THEN RAISE EXCEPTION 'fw-b may not write'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER no_b BEFORE INSERT ON infraveil_audit FOR EACH ROW EXECUTE FUNCTION no_b();",
    );
    let (ok, out, err) = veilctl(
        Some(&b.admin_url),
        &["approvals", "approve", &id, "--as", "oncall"],
    )
    .await;
    eprintln!("approve on B: ok={ok} {out}{err}");
    let ran = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    let gone = cluster()
        .psql(&db, "SELECT to_regclass('doomed') IS NULL")
        .unwrap();
    ctl_sql(&db_name, "DROP TRIGGER no_b ON infraveil_audit");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = export(&a).await;
    let decided = records
        .iter()
        .any(|r| r["type"] == "approval.decided" && r["approval"] == id.as_str());
    eprintln!("the DROP: {ran:?}; table gone: {gone}; approval.decided recorded: {decided}");
    assert!(
        ok || gone.trim() == "f",
        "the approver was told the approval failed, but the DROP ran"
    );
    assert!(
        decided || gone.trim() == "f",
        "the DROP ran on an approval with no approval.decided record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_the_audit_cannot_record_does_not_take_effect() {
    let (db_name, url) = state_db("unaudited");
    let (a, b) = pair_on(&url).await;
    let db = fresh_db_with(
        "atk_unaudited",
        "CREATE TABLE t (v int); GRANT SELECT, INSERT ON t TO app_write;",
    );
    let (_, secret) = issue(&a, "ops-agent", "agent").await;
    let c = a.connect_as("ops-agent", &secret, &db).await.unwrap();
    let e = c
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let id = pending_on(&b).await[0]["id"].as_str().unwrap().to_owned();
    // B's audit records cannot be stored now (documents still can).
    ctl_sql(&db_name, "REVOKE INSERT ON infraveil_audit FROM veil_state");
    // Make B try (and fail) a record first, so it knows.
    let _ = b.connect(&db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out, err) = veilctl(
        Some(&b.admin_url),
        &["approvals", "approve", &id, "--as", "oncall"],
    )
    .await;
    eprintln!("approve while B's audit is refused: ok={ok} {out}{err}");
    ctl_sql(&db_name, "GRANT INSERT ON infraveil_audit TO veil_state");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = ctl_sql(
        &db_name,
        &format!(
            "SELECT doc->>'status' FROM infraveil_docs WHERE kind = 'approvals' AND id = '{id}'"
        ),
    );
    let records = export(&a).await;
    let decided = records
        .iter()
        .any(|r| r["type"] == "approval.decided" && r["approval"] == id.as_str());
    let rerun = c.batch_execute("INSERT INTO t VALUES (1)").await;
    eprintln!("re-sent after recovery: {rerun:?}");
    assert!(
        status == "pending" || decided,
        "the request is {status} with no approval.decided record (approve said ok={ok}); \
         re-sent, the statement {}",
        if rerun.is_ok() { "ran" } else { "was refused" }
    );
    assert!(!ok || decided);
}
