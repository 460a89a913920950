//! When the log cannot be written, nothing is forwarded.

use super::common::*;

#[tokio::test]
async fn statements_are_refused_when_the_log_cannot_be_written() {
    let faults = infraveil::store::Faults::default();
    let p = Proxy::start(ProxyOptions {
        store_faults: faults.clone(),
        ..ProxyOptions::with_grants()
    })
    .await;
    let db = fresh_db("audit_closed");
    let pw = p.issue("alice", "deployer").await;
    let c = p.connect_with("alice", &db, &pw).await;
    // The simple protocol: tokio-postgres closes a prepared statement when
    // it is dropped, and the FATAL below would answer that Close instead.
    c.batch_execute("SELECT 1").await.unwrap();
    // The disk fails. The DDL's record cannot be made durable, so the DDL
    // is not forwarded and the session ends.
    faults.fail_writes(true);
    let e = c
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap_err();
    let db_error = e
        .as_db_error()
        .expect("a FATAL error, not a dropped connection");
    assert_eq!(db_error.code().code(), "58030", "{e}");
    assert_eq!(db_error.severity(), "FATAL", "{e}");
    assert!(db_error.message().contains("audit log"), "{e}");
    // From then on everything a session sends is refused, in both
    // protocols.
    let c = p.connect_with("alice", &db, &pw).await;
    for sql in ["SELECT 1", "CREATE TABLE t (id int)"] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "58030", "{sql}: {e}");
        let msg = e.as_db_error().unwrap().message().to_owned();
        assert!(msg.contains("audit log"), "{msg}");
    }
    let e = c.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "58030");
    // Nothing reached PostgreSQL.
    let tables = cluster()
        .psql(&db, "SELECT count(*) FROM pg_tables WHERE tablename = 't'")
        .unwrap();
    assert_eq!(tables, "0");
    // Grants are refused too: they could not be recorded.
    let (ok, _, err) = p
        .veilctl(&[
            "grants",
            "issue",
            "--identity",
            "oncall",
            "--role",
            "readonly",
            "--ttl",
            "1h",
        ])
        .await;
    assert!(!ok && err.contains("audit log"), "{err}");
    let m = p.admin_get("/metrics").await;
    assert!(m.contains("infraveil_audit_healthy 0"), "{m}");
}
