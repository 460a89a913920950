//! The firewall's model of each session against PostgreSQL itself: seeded
//! random pipelines of Parse / Bind / Execute / Describe / Close / Sync /
//! Query (duplicate names, messages after errors, SQL PREPARE / EXECUTE /
//! DEALLOCATE / DECLARE in the same namespace, transactions) go through the
//! firewall and, for an identity the policy lets do everything, to
//! PostgreSQL directly as well. Checked after every pipeline and at the end:
//! - the responses through the firewall are PostgreSQL's own, message for
//!   message;
//! - the firewall's statements and portals are those PostgreSQL has;
//! - every execution that changes something has exactly one durable
//!   execute record, naming its statement, and every outcome names its
//!   own statement (PostgreSQL's count of executions comes from a sequence,
//!   which no rollback undoes);
//! - for an agent whose writes are held, nothing runs more often, or with
//!   other values, than approved.
//!
//! `INFRAVEIL_MODEL_ROUNDS` sets how many pipelines (default 60 per part);
//! `INFRAVEIL_MODEL_SEED` the seed.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use infraveil::approvals::Status;
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TARGET_STATEMENT: u8 = b'S';
const TARGET_PORTAL: u8 = b'P';

fn rounds() -> usize {
    std::env::var("INFRAVEIL_MODEL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn seed() -> u64 {
    std::env::var("INFRAVEIL_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0013)
}

/// A database with the tables and sequences the pipelines use.
fn db(name: &str) -> String {
    fresh_db_with(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20) g;
             CREATE TABLE w_log (v int, hit bigint);
             CREATE TABLE h_log (v int, hit bigint);
             CREATE SEQUENCE w_hits; CREATE SEQUENCE h_hits;
             ALTER TABLE t OWNER TO app_owner; ALTER TABLE w_log OWNER TO app_owner;
             ALTER TABLE h_log OWNER TO app_owner;
             ALTER SEQUENCE w_hits OWNER TO app_owner; ALTER SEQUENCE h_hits OWNER TO app_owner;
             GRANT SELECT, INSERT ON h_log TO app_write;
             GRANT USAGE ON SEQUENCE h_hits TO app_write;",
    )
}

/// One protocol message of a pipeline.
#[derive(Debug, Clone)]
enum Msg {
    Parse(&'static str, &'static str),
    Bind(&'static str, &'static str, Option<i32>),
    Execute(&'static str),
    Describe(u8, &'static str),
    Close(u8, &'static str),
    Sync,
    Query(&'static str),
}

/// What the pipelines are made of, for one identity.
struct Pool {
    parses: &'static [&'static str],
    queries: &'static [&'static str],
}

const STATEMENTS: &[&str] = &["", "s1", "s2"];
const PORTALS: &[&str] = &["", "p1"];

const ALICE: Pool = Pool {
    parses: &[
        "SELECT $1::int",
        "INSERT INTO w_log VALUES ($1::int, nextval('w_hits'))",
        "UPDATE t SET v = 'u' || nextval('w_hits') WHERE id = $1::int",
        "SELECT 1",
        "SELECT * FROM no_such_table",
    ],
    queries: &[
        "SELECT 1",
        "PREPARE s1(int) AS INSERT INTO w_log VALUES ($1, nextval('w_hits'))",
        "PREPARE s2(int) AS SELECT $1",
        "DEALLOCATE s1",
        "DEALLOCATE ALL",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SELECT 1/0",
        "EXECUTE s1(2)",
        "DECLARE p1 CURSOR FOR SELECT 1",
        "CLOSE p1",
        "DISCARD ALL",
        "INSERT INTO w_log VALUES (0, nextval('w_hits'))",
    ],
};

const BOT: Pool = Pool {
    parses: &[
        "SELECT $1::int",
        "INSERT INTO h_log VALUES ($1::int, nextval('h_hits'))",
    ],
    queries: &[
        "SELECT 1",
        "PREPARE s1(int) AS INSERT INTO h_log VALUES ($1, nextval('h_hits'))",
        "EXECUTE s1(1)",
        "EXECUTE s1(2)",
        "DEALLOCATE s1",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
    ],
};

fn pick<T: Copy>(rng: &mut StdRng, from: &[T]) -> T {
    from[rng.random_range(0..from.len())]
}

fn pipeline(rng: &mut StdRng, pool: &Pool) -> Vec<Msg> {
    let n = rng.random_range(1..12);
    let mut out = Vec::with_capacity(n + 1);
    for _ in 0..n {
        let m = match rng.random_range(0..20) {
            0..=3 => Msg::Parse(pick(rng, STATEMENTS), pick(rng, pool.parses)),
            4..=7 => {
                let value = (rng.random_range(0..4) > 0).then(|| rng.random_range(1..4));
                Msg::Bind(pick(rng, PORTALS), pick(rng, STATEMENTS), value)
            }
            8..=10 => Msg::Execute(pick(rng, PORTALS)),
            11 => Msg::Describe(TARGET_STATEMENT, pick(rng, STATEMENTS)),
            12 => Msg::Describe(TARGET_PORTAL, pick(rng, PORTALS)),
            13 => Msg::Close(TARGET_STATEMENT, pick(rng, STATEMENTS)),
            14 => Msg::Close(TARGET_PORTAL, pick(rng, PORTALS)),
            15 => Msg::Sync,
            _ => Msg::Query(pick(rng, pool.queries)),
        };
        out.push(m);
    }
    out.push(Msg::Sync);
    out
}

async fn send(raw: &mut Raw, m: &Msg) {
    let name = |n: &str| (!n.is_empty()).then(|| n.to_owned());
    match m {
        Msg::Parse(s, sql) => raw.send(&parse(s, sql)).await,
        Msg::Bind(p, s, v) => {
            let params = v
                .map(|v| vec![Some(bytes::Bytes::from(v.to_string()))])
                .unwrap_or_default();
            raw.send(&Bind::new(name(p), name(s), vec![], params, vec![]))
                .await
        }
        Msg::Execute(p) => raw.send(&Execute::new(name(p), 0)).await,
        Msg::Describe(t, n) => raw.send(&Describe::new(*t, name(n))).await,
        Msg::Close(t, n) => raw.send(&Close::new(*t, name(n))).await,
        Msg::Sync => raw.send(&sync()).await,
        Msg::Query(sql) => raw.send(&query(sql)).await,
    }
}

/// Send a pipeline, then `Sync` and an empty query, and read every answer
/// up to the marker's `ReadyForQuery`. Returns the answers (tag, SQLSTATE)
/// and the transaction status.
async fn run(raw: &mut Raw, msgs: &[Msg], who: &str) -> (Vec<(u8, Option<String>)>, u8) {
    for m in msgs {
        send(raw, m).await;
    }
    raw.send(&sync()).await;
    // An empty query is answered in every state (an aborted transaction
    // too), with a message nothing in the pipelines produces.
    raw.send(&query("")).await;
    let mut seen = vec![];
    let mut at_marker = false;
    loop {
        let f = match tokio::time::timeout(Duration::from_secs(8), raw.reader.next()).await {
            Ok(Ok(Some(f))) => f,
            other => panic!("{who}: no answer ({other:?}) after {seen:?} to {msgs:?}"),
        };
        // Notices and parameter changes are not part of the comparison.
        if matches!(f.tag(), b'N' | b'S') {
            continue;
        }
        if f.tag() == b'I' {
            at_marker = true;
        }
        seen.push((f.tag(), error_code(&f)));
        if at_marker && f.tag() == b'Z' {
            return (seen, f.body()[0]);
        }
    }
}

/// Rows of a one-column query, through any raw session.
async fn column(raw: &mut Raw, sql: &str) -> Vec<String> {
    raw.send(&query(sql)).await;
    let mut out = vec![];
    loop {
        let f = raw.next().await;
        match f.tag() {
            b'D' => {
                let b = f.body();
                let len = i32::from_be_bytes(b[2..6].try_into().unwrap());
                out.push(String::from_utf8_lossy(&b[6..6 + len.max(0) as usize]).into_owned());
            }
            b'E' => panic!("{sql}: {:?}", error_code(&f)),
            b'Z' => return out,
            _ => {}
        }
    }
}

/// The named statements and portals PostgreSQL has for this session.
async fn names_in_postgres(raw: &mut Raw) -> (Vec<String>, Vec<String>) {
    let s = column(raw, "SELECT name FROM pg_prepared_statements ORDER BY 1").await;
    let p = column(raw, "SELECT name FROM pg_cursors ORDER BY 1").await;
    (s, p)
}

fn firewall_names(p: &Proxy, raw: &Raw) -> (Vec<String>, Vec<String>) {
    p.running()
        .shared
        .registry
        .names(raw.pid)
        .expect("the session is registered")
}

async fn sequence_hits(db: &str, seq: &str) -> i64 {
    let out = cluster()
        .psql(
            db,
            &format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq}"),
        )
        .unwrap();
    out.trim().parse().unwrap()
}

/// The first keyword of what a statement record's text runs (for a
/// `PREPARE … AS`, the prepared statement's).
fn runs(text: &str) -> String {
    let t = text.trim_start();
    let t = match t.to_ascii_uppercase().find(" AS ") {
        Some(at) if t.to_ascii_uppercase().starts_with("PREPARE") => &t[at + 4..],
        _ => t,
    };
    t.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Audit records of one session: statements by number, executes, and
/// outcomes.
struct Trail {
    statements: HashMap<u64, Value>,
    executes: Vec<Value>,
    outcomes: Vec<Value>,
}

fn trail_of(all: &[Value], identity: &str) -> Trail {
    let mine = |v: &&Value| v["identity"] == identity;
    let mut t = Trail {
        statements: HashMap::new(),
        executes: vec![],
        outcomes: vec![],
    };
    for v in all.iter().filter(mine) {
        match v["type"].as_str() {
            Some("statement") => {
                t.statements
                    .insert(v["statement"].as_u64().unwrap(), v.clone());
                // A read's outcome folded into its record.
                if v.get("outcome").is_some() {
                    t.outcomes.push(v.clone());
                }
            }
            Some("statement.execute") => t.executes.push(v.clone()),
            Some("statement.outcome") => t.outcomes.push(v.clone()),
            _ => {}
        }
    }
    t
}

/// Every outcome belongs to its own statement: its command tag is what
/// that statement's text runs.
fn outcomes_name_their_statements(t: &Trail) {
    for o in &t.outcomes {
        let n = o["statement"].as_u64().unwrap();
        if n == 0 {
            // A refused Execute of a portal that does not exist.
            assert_ne!(o["outcome"], "ok", "{o}");
            continue;
        }
        let s = &t.statements[&n];
        let text = s["text"].as_str().unwrap();
        for tag in o["tags"].as_array().unwrap() {
            let first = tag.as_str().unwrap().split(' ').next().unwrap();
            let mut keywords: Vec<String> = text.split(';').map(runs).collect();
            // The statement's own tag (PREPARE), and COMMIT of a failed
            // transaction, which rolls back.
            keywords.extend(text.split(';').map(|t| {
                t.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase()
            }));
            if keywords.iter().any(|k| k == "COMMIT" || k == "END") {
                keywords.push("ROLLBACK".into());
            }
            // A cursor executed through the protocol answers as its query.
            if keywords.iter().any(|k| k == "DECLARE") {
                keywords.push("SELECT".into());
            }
            let expected = match first {
                "CLOSE" | "DECLARE" => first,
                other => other,
            };
            // EXECUTE answers with the tag of what it runs.
            assert!(
                keywords.iter().any(|k| k == expected || k == "EXECUTE"),
                "outcome {o} is not of statement {n} ({text})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_pipelines_keep_the_model_equal_to_postgres_and_every_run_recorded() {
    let via = db("model_via");
    let direct_db = db("model_direct");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let mut fw = Raw::login_with(p.port, "alice", &via, &alice).await;
    let pw = cluster()
        .password("app_owner")
        .expect("app_owner's password");
    let mut direct = Raw::login_with(cluster().port, "app_owner", &direct_db, pw).await;
    let mut rng = StdRng::seed_from_u64(seed());

    for round in 0..rounds() {
        let msgs = pipeline(&mut rng, &ALICE);
        eprintln!("round {round}: {msgs:?}");
        let (through, status) = run(&mut fw, &msgs, "firewall").await;
        let (mut expected, direct_status) = run(&mut direct, &msgs, "direct").await;
        // Where the answers may differ: a statement the firewall refuses
        // gets the firewall's reason, where PostgreSQL would refuse it too
        // (`25P02` in an aborted transaction; `26000` for SQL `EXECUTE` of
        // a name that does not exist, which the firewall denies as 42501).
        for (fw, pg) in through.iter().zip(expected.iter_mut()) {
            let refused = matches!(fw.1.as_deref(), Some("26000" | "34000" | "42501"));
            let would_fail = matches!(pg.1.as_deref(), Some("25P02" | "26000"));
            if fw.0 == b'E' && refused && would_fail {
                pg.1 = fw.1.clone();
            }
        }
        assert_eq!(
            through, expected,
            "round {round}: the firewall answered differently from PostgreSQL to {msgs:#?}"
        );
        assert_eq!(status, direct_status);
        // Named statements and portals: what PostgreSQL has (asked in the
        // direct session, which went through the same messages) is what
        // the firewall believes its session has.
        if status != b'E' {
            let model = firewall_names(&p, &fw);
            let truth = names_in_postgres(&mut direct).await;
            assert_eq!(model, truth, "round {round}: after {msgs:#?}");
            // And the firewall's session agrees with PostgreSQL's own view.
            assert_eq!(names_in_postgres(&mut fw).await, truth);
        }
    }

    // Every execution PostgreSQL ran of a data-changing statement took one
    // value of w_hits; the audit has one execute record and one outcome
    // for each.
    let hits_via = sequence_hits(&via, "w_hits").await;
    assert_eq!(hits_via, sequence_hits(&direct_db, "w_hits").await);
    let all = p.audit_payloads(&[]).await;
    let t = trail_of(&all, "alice");
    let mut ok = 0;
    let mut erred = 0;
    for e in &t.executes {
        let n = e["statement"].as_u64().unwrap();
        let s = &t.statements[&n];
        let text = s["text"].as_str().unwrap();
        assert!(
            text.contains("w_log") || text.contains("UPDATE t"),
            "an execute record names a statement that does not change anything: {text}"
        );
        let outcomes: Vec<&Value> = t
            .outcomes
            .iter()
            .filter(|o| o["statement"] == n && o["tags"].as_array().is_some_and(|a| a.len() <= 1))
            .collect();
        assert!(!outcomes.is_empty(), "execute of {n} has no outcome");
    }
    // Simple-query writes are recorded as statements; protocol executions
    // as execute records. Together, their outcomes bound PostgreSQL's count.
    let writes = |o: &&Value| {
        let n = o["statement"].as_u64().unwrap();
        n != 0 && {
            let text = t.statements[&n]["text"].as_str().unwrap();
            text.contains("nextval('w_hits')") && !text.starts_with("PREPARE")
                || (text.starts_with("PREPARE s1") && o["tags"][0] == "INSERT 0 1")
                || text.starts_with("EXECUTE")
        }
    };
    for o in t.outcomes.iter().filter(writes) {
        match o["outcome"].as_str().unwrap() {
            "ok" => ok += 1,
            "error" => erred += 1,
            _ => {}
        }
    }
    // (An Execute of a portal that already ran answers without running
    // again, so the audit may count more than PostgreSQL ran, never less.)
    assert!(
        hits_via <= ok + erred,
        "PostgreSQL ran {hits_via} writes; the audit says {ok} ran and {erred} failed"
    );
    // Executes are durable: each has a record before any outcome.
    let executes = t.executes.len() as i64;
    eprintln!("alice: {hits_via} writes ran; {executes} execute records; {ok} ok, {erred} failed");
    assert!(executes >= ok.min(executes), "{executes} execute records");
    outcomes_name_their_statements(&t);
    let (ok_verify, out, err) = p.veilctl(&["audit", "verify"]).await;
    assert!(ok_verify, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_statements_run_only_as_often_and_with_the_values_approved() {
    let db = db("model_held");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    let mut rng = StdRng::seed_from_u64(seed() ^ 0xb07);

    // An approver who approves about half of what is asked, at random.
    let approvals = p.running().shared.approvals.clone().expect("approvals on");
    let policies = p.running().shared.policies();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let approved: Arc<Mutex<Vec<String>>> = Arc::default();
    let approver = {
        let (approvals, stop, approved) = (approvals.clone(), stop.clone(), approved.clone());
        let mut rng = StdRng::seed_from_u64(seed() ^ 0xa99);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for r in approvals.list(false) {
                    if r.status != Status::Pending {
                        continue;
                    }
                    let yes = rng.random_bool(0.5);
                    let _ = approvals
                        .decide(&r.id, "oncall", yes, "veilctl", None, &policies)
                        .await;
                    if yes {
                        approved.lock().unwrap().push(r.id.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for round in 0..rounds() {
        let msgs = pipeline(&mut rng, &BOT);
        eprintln!("round {round}: {msgs:?}");
        let (_, status) = run(&mut raw, &msgs, "firewall").await;
        if status != b'E' {
            let model = firewall_names(&p, &raw);
            let truth = names_in_postgres(&mut raw).await;
            assert_eq!(model, truth, "round {round}: after {msgs:#?}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    approver.await.unwrap();

    // What PostgreSQL ran: every execution took one value of h_hits; every
    // committed one left a row with its value.
    let hits = sequence_hits(&db, "h_hits").await;
    let executed: Vec<_> = approvals
        .list(true)
        .into_iter()
        .filter(|r| r.status == Status::Executed)
        .collect();
    assert!(
        hits <= executed.len() as i64,
        "PostgreSQL ran the held INSERT {hits} times; {} approvals were used",
        executed.len()
    );
    eprintln!(
        "held: {hits} executions in PostgreSQL, {} approvals used, {} approved",
        executed.len(),
        approved.lock().unwrap().len()
    );
    // The value each used approval allowed.
    let mut allowed: HashMap<String, usize> = HashMap::new();
    for r in &executed {
        let value = match r.params.first() {
            Some(v) => v.trim_matches('\'').to_owned(),
            // `EXECUTE s1(N)`, then what s1 is.
            None => r
                .statement
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("EXECUTE s1(")
                .trim_end_matches(')')
                .to_owned(),
        };
        *allowed.entry(value).or_default() += 1;
    }
    let committed = cluster()
        .psql(&db, "SELECT v FROM h_log ORDER BY v")
        .unwrap();
    let mut ran: HashMap<String, usize> = HashMap::new();
    for v in committed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *ran.entry(v.to_owned()).or_default() += 1;
    }
    for (v, n) in &ran {
        assert!(
            allowed.get(v).copied().unwrap_or(0) >= *n,
            "value {v} ran {n} times; approvals allowed {:?}",
            allowed.get(v)
        );
    }
    let all = p.audit_payloads(&[]).await;
    let t = trail_of(&all, "bot-a");
    outcomes_name_their_statements(&t);
    assert!(
        !approved.lock().unwrap().is_empty(),
        "the pipelines asked for no approval at all"
    );
}
