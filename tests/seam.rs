//! The inspection seam with a test-only deny rule: a denied statement is never
//! executed, the client gets 42501, error recovery up to Sync is exact and
//! the transaction state the client sees is PostgreSQL's own.

mod common;

use std::sync::Arc;

use common::*;
use infraveil::policy::inspect::DenyContaining;

const MARK: &str = "forbidden_zone";

async fn proxy() -> Proxy {
    Proxy::start(ProxyOptions {
        inspector: Arc::new(DenyContaining(MARK.into())),
        ..Default::default()
    })
    .await
}

fn setup(db: &str) {
    cluster()
        .psql(db, "SET ROLE app_owner; CREATE TABLE t (id int); CREATE TABLE forbidden_zone (id int); INSERT INTO forbidden_zone VALUES (1);")
        .unwrap();
}

fn count(db: &str, table: &str) -> String {
    cluster()
        .psql(db, &format!("SELECT count(*) FROM {table}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_denied_and_session_usable() {
    let db = fresh_db("deny_simple");
    setup(&db);
    let p = proxy().await;
    let c = p.connect("alice", &db).await;
    let e = c
        .batch_execute("DROP TABLE forbidden_zone")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let dbe = e.as_db_error().unwrap();
    assert!(
        dbe.message().contains("test.deny_containing"),
        "{}",
        dbe.message()
    );
    assert!(dbe.detail().unwrap().contains(MARK));
    assert_eq!(count(&db, "forbidden_zone"), "1", "table must still exist");
    // A multi-statement string is judged whole: nothing of it runs.
    let e = c
        .batch_execute("INSERT INTO t VALUES (1); DELETE FROM forbidden_zone")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(count(&db, "t"), "0");
    assert_eq!(scalar::<i32>(&c, "SELECT 7::int").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_denied() {
    let db = fresh_db("deny_ext");
    setup(&db);
    let p = proxy().await;
    let c = p.connect("alice", &db).await;
    let e = c
        .prepare("DELETE FROM forbidden_zone WHERE id = $1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = c
        .execute("DELETE FROM forbidden_zone", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(count(&db, "forbidden_zone"), "1");
    let s = c.prepare("SELECT $1::int + 1").await.unwrap();
    assert_eq!(c.query_one(&s, &[&1i32]).await.unwrap().get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_inside_a_transaction_fails_it_like_postgres() {
    let db = fresh_db("deny_tx");
    setup(&db);
    let p = proxy().await;
    let mut c = p.connect("alice", &db).await;
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let e = tx
        .execute("TRUNCATE forbidden_zone", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // The transaction is aborted upstream too: no way to commit the insert.
    let e = tx
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    let _ = tx.commit().await;
    assert_eq!(count(&db, "t"), "0");
    assert_eq!(count(&db, "forbidden_zone"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_mid_pipeline_discards_to_sync_and_rolls_back_the_batch() {
    let db = fresh_db("deny_pipe");
    setup(&db);
    let p = proxy().await;
    let mut raw = Raw::login(p.port, "alice", &db).await;
    // INSERT (allowed), DELETE (denied), INSERT (after the error) — one Sync.
    let (tags, codes, status) = raw
        .pipeline(&[
            "INSERT INTO t VALUES (1)",
            "DELETE FROM forbidden_zone",
            "INSERT INTO t VALUES (2)",
        ])
        .await;
    assert_eq!(String::from_utf8_lossy(&tags), "12CEZ");
    assert_eq!(codes, vec!["42501"]);
    assert_eq!(status, b'I');
    // Exactly as if PostgreSQL had failed the statement: the implicit
    // transaction is rolled back, the denied statement never ran.
    assert_eq!(count(&db, "t"), "0");
    assert_eq!(count(&db, "forbidden_zone"), "1");

    // Named statements: a denied Parse leaves no statement behind.
    raw.send(&parse("s1", "SELECT * FROM forbidden_zone")).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501"]);
    raw.send(&bind("s1")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["26000"]); // prepared statement does not exist

    // Two denials in one batch: one error, as PostgreSQL would send.
    raw.send(&parse("", "SELECT 1 FROM forbidden_zone")).await;
    raw.send(&parse("", "SELECT 2 FROM forbidden_zone")).await;
    raw.send(&sync()).await;
    let (tags, codes, _) = raw.until_ready().await;
    assert_eq!(
        (String::from_utf8_lossy(&tags).into_owned(), codes),
        ("EZ".into(), vec!["42501".to_owned()])
    );

    // Simple queries pipelined without waiting: each gets its own answer.
    raw.send(&query("SELECT 1")).await;
    raw.send(&query("SELECT * FROM forbidden_zone")).await;
    raw.send(&query("SELECT 3")).await;
    let (t1, c1, _) = raw.until_ready().await;
    let (t2, c2, _) = raw.until_ready().await;
    let (t3, c3, _) = raw.until_ready().await;
    assert_eq!((t1, c1), (b"TDCZ".to_vec(), vec![]));
    assert_eq!((t2, c2), (b"EZ".to_vec(), vec!["42501".to_owned()]));
    assert_eq!((t3, c3), (b"TDCZ".to_vec(), vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_message_is_refused() {
    let db = fresh_db("fcall");
    let p = proxy().await;
    let mut raw = Raw::login(p.port, "alice", &db).await;
    // FunctionCall for OID 2171 (pg_cancel_backend) with one int4 argument.
    let mut body = vec![];
    body.extend_from_slice(&2171u32.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 4]);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    raw.send_frame(b'F', &body).await;
    let (tags, codes, _) = raw.until_ready().await;
    assert_eq!((tags, codes), (b"EZ".to_vec(), vec!["0A000".to_owned()]));
    raw.send(&query("SELECT 1")).await;
    let (tags, _, _) = raw.until_ready().await;
    assert_eq!(tags, b"TDCZ".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_statement_is_refused() {
    let db = fresh_db("utf8");
    let p = proxy().await;
    let mut raw = Raw::login(p.port, "alice", &db).await;
    raw.send_frame(b'Q', b"SELECT '\xff\xfe'\0").await;
    let (tags, codes, _) = raw.until_ready().await;
    assert_eq!((tags, codes), (b"EZ".to_vec(), vec!["22021".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_marker_is_not_special() {
    let db = fresh_db("forge");
    let p = proxy().await;
    let c = p.connect("alice", &db).await;
    // A client that types a marker-looking identifier just gets PostgreSQL's
    // syntax error: the per-session random marker cannot be guessed.
    let e = c
        .batch_execute("infraveil_denied_0000000000000000_1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
}
