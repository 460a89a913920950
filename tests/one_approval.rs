//! One approval, one execution, one record: a regression test per way the
//! protocol-level review ran an approved statement more than once, ran what
//! nobody approved, or hid an execution from the audit log.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use infraveil::approvals::Status;
use infraveil::protocol::ErrorFields;
use pgwire::messages::extendedquery::{Bind, Close};
use serde_json::Value;

fn db(name: &str) -> String {
    fresh_db_with(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20) g;
             CREATE TABLE w (v int);
             ALTER TABLE t OWNER TO app_owner; ALTER TABLE w OWNER TO app_owner;
             GRANT SELECT, INSERT, UPDATE, DELETE ON t TO app_write;
             GRANT INSERT ON w TO app_write;",
    )
}

fn has_row(db: &str, id: i32) -> bool {
    cluster()
        .psql(db, &format!("SELECT count(*) FROM t WHERE id = {id}"))
        .unwrap()
        .trim()
        == "1"
}

fn bind_with(portal: &str, stmt: &str, value: i32) -> Bind {
    Bind::new(
        (!portal.is_empty()).then(|| portal.into()),
        (!stmt.is_empty()).then(|| stmt.into()),
        vec![],
        vec![Some(Bytes::from(value.to_string()))],
        vec![],
    )
}

/// Bind `stmt` with one value, execute the unnamed portal, Sync; returns
/// the error codes.
async fn run_bound(raw: &mut Raw, stmt: &str, value: i32) -> Vec<String> {
    raw.send(&bind_with("", stmt, value)).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    raw.until_ready().await.1
}

/// Approve every pending request of `identity`; returns how many.
async fn approve_pending(p: &Proxy, identity: &str) -> Vec<infraveil::approvals::ApprovalView> {
    let approvals = p.running().shared.approvals.clone().unwrap();
    let mut out = vec![];
    for _ in 0..100 {
        out = approvals
            .list(false)
            .into_iter()
            .filter(|r| r.identity == identity && r.status == Status::Pending)
            .collect();
        if !out.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!out.is_empty(), "no pending request of {identity}");
    for r in &out {
        let (ok, _, err) = p
            .veilctl(&["approvals", "approve", &r.id, "--as", "oncall"])
            .await;
        assert!(ok, "{err}");
    }
    out
}

/// Mechanism 1: an approved SQL `PREPARE` is one statement in the same
/// namespace as protocol ones; every Bind of it needs its own approval for
/// its own values, and SQL `EXECUTE` is held too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_sql_prepare_never_becomes_an_unlimited_statement() {
    let db = db("prepare_once");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    let prepare = "PREPARE d(int) AS DELETE FROM t WHERE id = $1";
    let (_, codes, _) = raw.pipeline_query(prepare).await;
    assert_eq!(codes, vec!["42501"], "the PREPARE is held");
    let reqs = approve_pending(&p, "bot-a").await;
    assert!(reqs[0].params.is_empty());
    let (_, codes, _) = raw.pipeline_query(prepare).await;
    assert!(codes.is_empty(), "{codes:?}");
    assert_eq!(
        p.running().shared.registry.names(raw.pid).unwrap().0,
        vec!["d"]
    );

    // Bind d [6]: asks, with the value shown.
    for _ in 0..2 {
        let codes = run_bound(&mut raw, "d", 6).await;
        assert_eq!(codes, vec!["42501"]);
    }
    assert!(has_row(&db, 6));
    let reqs = approve_pending(&p, "bot-a").await;
    assert_eq!(reqs.len(), 1, "asking twice pages once");
    assert_eq!(reqs[0].params, vec!["'6'"]);
    // Approved for 6: 7 is still asked for, 6 runs once.
    let codes = run_bound(&mut raw, "d", 7).await;
    assert_eq!(codes, vec!["42501"], "other values are not approved");
    assert!(has_row(&db, 7));
    let codes = run_bound(&mut raw, "d", 6).await;
    assert!(codes.is_empty(), "{codes:?}");
    assert!(!has_row(&db, 6));
    let codes = run_bound(&mut raw, "d", 6).await;
    assert_eq!(codes, vec!["42501"], "an approval runs once");
    // SQL EXECUTE of it is held as well.
    let (_, codes, _) = raw.pipeline_query("EXECUTE d(8)").await;
    assert_eq!(codes, vec!["42501"]);
    assert!(has_row(&db, 8));
}

/// Mechanism 2: after one approved run, nothing a client can send (a Close
/// PostgreSQL skips, a Query, a re-Parse) makes the statement bind again
/// without a new approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skipped_messages_cannot_reset_an_approval() {
    let db = db("no_reset");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    raw.send(&parse("s", "DELETE FROM t WHERE id = $1")).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    run_bound(&mut raw, "s", 5).await;
    approve_pending(&p, "bot-a").await;
    let codes = run_bound(&mut raw, "s", 5).await;
    assert!(codes.is_empty(), "{codes:?}");
    cluster()
        .psql(&db, "INSERT INTO t VALUES (5, 'back')")
        .unwrap();

    // A refused Bind, then a Close PostgreSQL skips, then Sync.
    raw.send(&bind_with("", "s", 5)).await;
    raw.send(&Close::new(b'S', Some("s".into()))).await;
    raw.send(&sync()).await;
    let (tags, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501"]);
    assert_eq!(tags, b"EZ".to_vec(), "the Close was skipped");
    assert_eq!(
        p.running().shared.registry.names(raw.pid).unwrap().0,
        vec!["s"],
        "the firewall skipped it too"
    );
    // The unnamed statement, with a Query in between.
    raw.send(&parse("", "DELETE FROM t WHERE id = $1")).await;
    raw.send(&bind_with("", "", 5)).await;
    raw.send(&query("SELECT 1")).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    for stmt in ["s", ""] {
        raw.send(&parse("", "DELETE FROM t WHERE id = $1")).await;
        let codes = run_bound(&mut raw, stmt, 5).await;
        assert_eq!(codes, vec!["42501"], "Bind of {stmt:?} asks again");
    }
    assert!(has_row(&db, 5));
}

/// Mechanism 4: re-using a name (a duplicate Parse PostgreSQL rejects, or
/// Close and SQL PREPARE) never hides an execution: each Execute of a
/// data-changing statement has its durable record naming that statement,
/// and its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reused_names_never_hide_executions() {
    let db = db("reuse");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let mut raw = Raw::login_with(p.port, "alice", &db, &alice).await;
    raw.send(&parse("s1", "INSERT INTO w VALUES (1)")).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    raw.send(&parse("s1", "SELECT 1")).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42P05"], "PostgreSQL keeps the first s1");
    raw.send(&bind("s1")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (tags, _, _) = raw.until_ready().await;
    assert_eq!(tags, b"2CZ".to_vec());
    // Close and SQL PREPARE of the same name.
    raw.send(&Close::new(b'S', Some("s1".into()))).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    raw.send(&query("PREPARE s1 AS INSERT INTO w VALUES (2)"))
        .await;
    raw.until_ready().await;
    raw.send(&bind("s1")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    let rows = cluster()
        .psql(&db, "SELECT string_agg(v::text, ',' ORDER BY v) FROM w")
        .unwrap();
    assert_eq!(rows.trim(), "1,2");

    let all = p.audit_payloads(&[]).await;
    let text_of = |n: &Value| {
        all.iter()
            .find(|v| v["type"] == "statement" && v["statement"] == *n && v["identity"] == "alice")
            .map(|v| v["text"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let executes: Vec<String> = all
        .iter()
        .filter(|v| v["type"] == "statement.execute" && v["identity"] == "alice")
        .map(|v| text_of(&v["statement"]))
        .collect();
    assert_eq!(
        executes,
        vec![
            "INSERT INTO w VALUES (1)".to_owned(),
            "PREPARE s1 AS INSERT INTO w VALUES (2)".to_owned()
        ]
    );
    for v in all
        .iter()
        .filter(|v| v["type"] == "statement.execute" && v["identity"] == "alice")
    {
        let outcome = all
            .iter()
            .find(|o| {
                o["type"] == "statement.outcome"
                    && o["statement"] == v["statement"]
                    && o["seq"].as_u64() > v["seq"].as_u64()
            })
            .unwrap_or_else(|| panic!("no outcome for {v}"));
        assert_eq!(outcome["tags"][0], "INSERT 0 1", "{outcome}");
    }
}

/// Mechanism 6: a `defer` approval is bound to the database (and the
/// upstream user): approved with one database's preview, it does not run
/// on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_is_bound_to_its_database() {
    let staging = db("staging");
    let production = db("production");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let stmt = "DELETE FROM t WHERE id = 3";
    let on_staging = p.connect_with("bot-a", &staging, &bot).await;
    assert_eq!(
        sqlstate(&on_staging.batch_execute(stmt).await.unwrap_err()),
        "42501"
    );
    let reqs = approve_pending(&p, "bot-a").await;
    assert_eq!(reqs[0].database, staging);
    let on_production = p.connect_with("bot-a", &production, &bot).await;
    let e = on_production.batch_execute(stmt).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "approved for staging only");
    assert!(has_row(&production, 3));
    on_staging.batch_execute(stmt).await.unwrap();
    assert!(!has_row(&staging, 3));
    assert!(has_row(&production, 3));
}

/// Mechanism 7: a Query PostgreSQL skips in an aborted pipeline is recorded
/// as skipped, and the outcomes after it stay with their own statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_stay_with_their_statements_across_skipped_messages() {
    let db = db("outcomes");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let mut raw = Raw::login_with(p.port, "alice", &db, &alice).await;
    raw.send(&parse("", "SELECT 1/0")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&query("INSERT INTO w VALUES (3)")).await;
    raw.send(&sync()).await;
    raw.send(&query("INSERT INTO w VALUES (4)")).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["22012"]);
    raw.until_ready().await;
    let rows = cluster()
        .psql(&db, "SELECT string_agg(v::text, ',') FROM w")
        .unwrap();
    assert_eq!(rows.trim(), "4");

    let mut all = vec![];
    for _ in 0..50 {
        all = p.audit_payloads(&[]).await;
        if all
            .iter()
            .filter(|v| v["type"] == "statement.outcome" && v["identity"] == "alice")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let number = |text: &str| {
        all.iter()
            .find(|v| v["type"] == "statement" && v["text"] == text)
            .map(|v| v["statement"].clone())
            .unwrap()
    };
    let outcome = |n: &Value| {
        all.iter()
            .find(|v| v["type"] == "statement.outcome" && v["statement"] == *n)
            .cloned()
            .unwrap_or_else(|| panic!("no outcome for statement {n}"))
    };
    assert_eq!(
        outcome(&number("INSERT INTO w VALUES (3)"))["outcome"],
        "skipped"
    );
    let four = outcome(&number("INSERT INTO w VALUES (4)"));
    assert_eq!(four["outcome"], "ok");
    assert_eq!(four["tags"][0], "INSERT 0 1");
}

fn count(db: &str, sql: &str) -> i64 {
    cluster().psql(db, sql).unwrap().trim().parse().unwrap()
}

fn encoded<M: pgwire::messages::Message>(m: &M) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    m.encode(&mut b).unwrap();
    b.to_vec()
}

/// Found by review: a COPY that fails on bad data left the model "in COPY"
/// and "skipping" for good, so every later Bind and Execute went upstream
/// unchecked. Now the COPY ends with its request, and a message the model
/// believes PostgreSQL will skip is refused rather than forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_copy_leaves_nothing_unchecked() {
    let db = db("copy_error");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    raw.send(&parse("a", "DELETE FROM t WHERE id = $1")).await;
    raw.send(&parse("c", "COPY w FROM STDIN")).await;
    raw.send(&bind("c")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    approve_pending(&p, "bot-a").await;
    raw.send(&bind("c")).await;
    raw.send(&execute()).await;
    raw.send_frame(b'H', b"").await;
    let f = raw.next().await;
    assert_eq!(f.tag(), b'2', "{:?}", error_code(&f));
    let f = raw.next().await;
    assert_eq!(
        f.tag(),
        b'G',
        "{:?}",
        ErrorFields::decode(&f.bytes).map(|e| e.message().map(str::to_owned))
    );
    raw.send(&copy_data("not-an-int\n")).await;
    assert_eq!(error_code(&raw.next().await).as_deref(), Some("22P02"));
    let mut batch = encoded(&sync());
    for id in 1..=10 {
        batch.extend(encoded(&bind_with("", "a", id)));
        batch.extend(encoded(&execute()));
    }
    batch.extend(encoded(&sync()));
    raw.send_raw(&batch).await;
    raw.until_ready().await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(
        codes,
        vec!["42501"],
        "the first Bind is held, the rest skipped"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 20);
    // The session is still in step.
    let (_, codes, _) = raw.pipeline_query("SELECT 1").await;
    assert!(codes.is_empty(), "{codes:?}");
}

/// Found by review: FETCH ran a portal bound through the protocol with no
/// execute record (and, for a held statement, beside its one approved
/// Execute). Such a portal runs only by Execute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_cannot_run_a_portal_that_changes_data() {
    let db = db("fetch");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let mut raw = Raw::login_with(p.port, "alice", &db, &alice).await;
    raw.send(&parse("ins", "INSERT INTO w VALUES (42) RETURNING v"))
        .await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    for sql in ["FETCH ALL FROM p", "MOVE ALL IN p"] {
        raw.pipeline_query("BEGIN").await;
        raw.send(&Bind::new(
            Some("p".into()),
            Some("ins".into()),
            vec![],
            vec![],
            vec![],
        ))
        .await;
        raw.send(&sync()).await;
        raw.until_ready().await;
        let (_, codes, _) = raw.pipeline_query(sql).await;
        assert_eq!(codes, vec!["42501"], "{sql}");
        raw.pipeline_query("ROLLBACK").await;
    }
    raw.pipeline_query("COMMIT").await;
    assert_eq!(count(&db, "SELECT count(*) FROM w"), 0);
    // A SQL cursor is read with FETCH as always.
    raw.pipeline_query("BEGIN").await;
    raw.pipeline_query("DECLARE c CURSOR FOR SELECT 1").await;
    let (_, codes, _) = raw.pipeline_query("FETCH ALL FROM c").await;
    assert!(codes.is_empty(), "{codes:?}");
}

/// Found by review: an approval of `EXECUTE x` was bound to that text, so
/// redefining `x` afterwards ran something else under it. The approval
/// names what `x` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_execute_is_bound_to_what_the_name_is() {
    let db = db("exec_swap");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    raw.send(&parse("x", "INSERT INTO w VALUES (1)")).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    let (_, codes, _) = raw.pipeline_query("EXECUTE x").await;
    assert_eq!(codes, vec!["42501"]);
    let reqs = approve_pending(&p, "bot-a").await;
    assert!(
        reqs[0]
            .statement
            .contains("where x is: INSERT INTO w VALUES (1)"),
        "{}",
        reqs[0].statement
    );
    raw.send(&Close::new(b'S', Some("x".into()))).await;
    raw.send(&parse("x", "DELETE FROM t")).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    let (_, codes, _) = raw.pipeline_query("EXECUTE x").await;
    assert_eq!(codes, vec!["42501"], "a new meaning needs a new approval");
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 20);
}

/// Found by review: the parameter types a Parse gives were not part of the
/// approval, so the same bytes could run with another meaning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_is_bound_to_parameter_types() {
    use pgwire::messages::extendedquery::Parse;
    let db = db("param_types");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    let sql = "DELETE FROM t WHERE id > length($1)";
    let value = Bind::new(
        None,
        Some("d".into()),
        vec![],
        vec![Some(Bytes::from_static(b"\\x41"))],
        vec![],
    );
    raw.send(&Parse::new(Some("d".into()), sql.into(), vec![25]))
        .await;
    raw.send(&value).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    let reqs = approve_pending(&p, "bot-a").await;
    assert_eq!(reqs[0].params, vec!["'\\x41' (type oid 25)"]);
    raw.send(&Close::new(b'S', Some("d".into()))).await;
    raw.send(&Parse::new(Some("d".into()), sql.into(), vec![17]))
        .await;
    raw.send(&value).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501"], "bytea is not what was approved");
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 20);
}

/// Found by review: a message that had to wait for PostgreSQL's answer to
/// a COPY waited on data the client had sent behind it, for ever. During
/// COPY nothing waits; what PostgreSQL would not run is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_waits_behind_a_copy() {
    let db = db("copy_wait");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let mut raw = Raw::login_with(p.port, "alice", &db, &alice).await;
    raw.send(&query("COPY w FROM STDIN")).await;
    assert_eq!(raw.next().await.tag(), b'G');
    raw.send(&execute()).await;
    raw.send(&copy_data("1\n")).await;
    raw.send(&copy_done()).await;
    // PostgreSQL ends the COPY over the unexpected message; the session
    // answers (an error or a closed connection), it does not hang.
    tokio::time::timeout(Duration::from_secs(10), raw.reader.next())
        .await
        .expect("an answer, not a hang")
        .ok();
    assert_eq!(count(&db, "SELECT count(*) FROM w"), 0);
}

/// Found by a second review: a `PREPARE` or `DEALLOCATE` sent as a protocol
/// statement changed the name only when its Execute completed, so a Bind of
/// that name later in the same segment was judged against the old
/// statement, and an approved PREPARE's DELETE ran three times unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepare_sent_as_a_protocol_statement_counts_at_once() {
    let db = db("protocol_prepare");
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    raw.send(&parse("x", "SELECT 1")).await;
    raw.send(&parse("dx", "DEALLOCATE x")).await;
    raw.send(&parse(
        "px",
        "PREPARE x(int) AS DELETE FROM t WHERE id > $1",
    ))
    .await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    assert_eq!(run_bound_none(&mut raw, "px").await, vec!["42501"]);
    approve_pending(&p, "bot-a").await;
    let mut batch = encoded(&bind("dx"));
    batch.extend(encoded(&execute()));
    batch.extend(encoded(&bind("px")));
    batch.extend(encoded(&execute()));
    for v in [15, 10, 5] {
        batch.extend(encoded(&bind_with("", "x", v)));
        batch.extend(encoded(&execute()));
    }
    batch.extend(encoded(&sync()));
    raw.send_raw(&batch).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501"], "the first Bind of the new x is held");
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 20);
    assert_eq!(
        p.running().shared.registry.names(raw.pid).unwrap().0,
        vec!["dx", "px", "x"]
    );
}

async fn run_bound_none(raw: &mut Raw, stmt: &str) -> Vec<String> {
    raw.send(&bind(stmt)).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    raw.until_ready().await.1
}

/// Found by a second review: after `ROLLBACK TO SAVEPOINT` the model had
/// forgotten a protocol portal PostgreSQL still had, and FETCH ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_is_refused_after_rollback_to_savepoint() {
    let db = db("fetch_savepoint");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let mut raw = Raw::login_with(p.port, "alice", &db, &alice).await;
    raw.send(&parse("ins", "INSERT INTO w VALUES (42) RETURNING v"))
        .await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    raw.pipeline_query("BEGIN").await;
    raw.send(&Bind::new(
        Some("p".into()),
        Some("ins".into()),
        vec![],
        vec![],
        vec![],
    ))
    .await;
    raw.send(&sync()).await;
    raw.until_ready().await;
    raw.pipeline_query("SAVEPOINT s").await;
    let (_, codes, _) = raw.pipeline_query("SELECT 1/0").await;
    assert_eq!(codes, vec!["22012"]);
    raw.pipeline_query("ROLLBACK TO SAVEPOINT s").await;
    let (_, codes, _) = raw.pipeline_query("FETCH ALL FROM p").await;
    assert_eq!(codes, vec!["42501"]);
    raw.pipeline_query("COMMIT").await;
    assert_eq!(count(&db, "SELECT count(*) FROM w"), 0);
}

/// Found by a second review: rewinding a scroll cursor whose query is not
/// a plain read ran its query again, as often as the client liked, under
/// one approval of the DECLARE. Such a cursor is read onward only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_that_changes_data_is_not_rewound() {
    let db = db("scroll");
    cluster()
        .psql(
            &db,
            "CREATE SEQUENCE s; ALTER SEQUENCE s OWNER TO app_owner;
             GRANT USAGE, UPDATE ON SEQUENCE s TO app_write;",
        )
        .unwrap();
    let p = approvals_fixture().await;
    let bot = p.issue("bot-a", "bot").await;
    let mut raw = Raw::login_with(p.port, "bot-a", &db, &bot).await;
    let declare = "DECLARE c SCROLL CURSOR FOR SELECT nextval('s') FROM generate_series(1, 3)";
    for rewind in [
        "MOVE ABSOLUTE 0 IN c",
        "FETCH BACKWARD ALL FROM c",
        "FETCH FIRST FROM c",
    ] {
        raw.pipeline_query("BEGIN").await;
        let (_, codes, _) = raw.pipeline_query(declare).await;
        assert_eq!(codes, vec!["42501"], "held");
        raw.pipeline_query("ROLLBACK").await;
        approve_pending(&p, "bot-a").await;
        raw.pipeline_query("BEGIN").await;
        let (_, codes, _) = raw.pipeline_query(declare).await;
        assert!(codes.is_empty(), "{codes:?}");
        let (_, codes, _) = raw.pipeline_query("FETCH ALL FROM c").await;
        assert!(
            codes.is_empty(),
            "onward is the one approved run: {codes:?}"
        );
        let (_, codes, _) = raw.pipeline_query(rewind).await;
        assert_eq!(codes, vec!["42501"], "{rewind}");
        raw.pipeline_query("ROLLBACK").await;
    }
    // Three approvals, three runs of three rows each.
    assert_eq!(count(&db, "SELECT last_value FROM s"), 9);
}
