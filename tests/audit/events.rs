//! What is recorded: connections, logins, statements with their outcomes, grants.

use super::common::*;
use super::*;
use serde_json::Value;

#[tokio::test]
async fn connections_auth_statements_outcomes_and_grants_are_recorded() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let db = fresh_db("audit_events");
    let (grant, pw) = p.grant("alice", "deployer", "1h").await;
    let c = p.connect_with("alice", &db, &pw).await;
    c.batch_execute("CREATE TABLE notes (id int primary key, body text)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO notes VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let n: i64 = scalar(&c, "SELECT count(*) FROM notes").await;
    assert_eq!(n, 2);
    // Extended protocol, with a parameter.
    let rows = c
        .query("SELECT body FROM notes WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let e = c
        .batch_execute("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    // A secret in a statement never reaches the log (the statement is
    // refused by policy, and recorded as refused).
    let _ = c
        .batch_execute("ALTER ROLE app_read PASSWORD 'hunter2-secret'")
        .await
        .unwrap_err();
    assert!(p.try_connect("alice", &db, "wrong").await.is_err());
    drop(c);
    p.veilctl_json(&["grants", "revoke", &grant]).await;

    let all = export_until(&p, "the session's close and every outcome", |all| {
        !of_type(all, "connection.closed").is_empty()
            && !of_type(all, "grant.revoked").is_empty()
            && statement(all, "no_such_table").is_some_and(|s| outcome_of(all, s).is_some())
    })
    .await;
    logins_are_recorded(&all, &grant);
    statements_carry_who_what_why_and_outcome(&all, &grant);
    each_read_has_its_outcome_once(&all);
    secrets_never_reach_the_log(&p, &all).await;
    revokes_closes_and_order_are_recorded(&all, &grant);
    the_log_verifies_online_and_against_a_checkpoint(&p).await;
    exports_filter_by_identity_and_time(&p, &all).await;

    // Metrics say the log is healthy and growing.
    let m = p.admin_get("/metrics").await;
    assert!(m.contains("infraveil_audit_healthy 1"), "{m}");
    p.shutdown().await;
}

/// Start, policy, grant, connection and both kinds of login.
fn logins_are_recorded(all: &[Value], grant: &str) {
    for t in [
        "daemon.start",
        "policy.loaded",
        "grant.issued",
        "connection.opened",
    ] {
        assert!(!of_type(all, t).is_empty(), "no {t} event");
    }
    let ok = of_type(all, "auth.succeeded");
    assert_eq!(ok[0]["identity"], "alice");
    assert_eq!(ok[0]["grant"], grant);
    let failed = of_type(all, "auth.failed");
    assert_eq!(failed[0]["user"], "alice");
    assert!(failed[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let opened = of_type(all, "connection.opened");
    assert_eq!(opened[0]["tls"], false);
    assert!(
        opened[0]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

/// A write, a prepared read and an error, each with identity, role, grant,
/// class, decision, rule, tables and outcome.
fn statements_carry_who_what_why_and_outcome(all: &[Value], grant: &str) {
    let insert = statement(all, "INSERT INTO notes").expect("insert recorded");
    assert_eq!(insert["class"], "write");
    assert_eq!(insert["decision"], "allow");
    assert_eq!(insert["identity"], "alice");
    assert_eq!(insert["role"], "deployer");
    assert_eq!(insert["grant"], grant);
    assert!(
        insert["rule"].as_str().is_some(),
        "the rule is named: {insert}"
    );
    assert_eq!(insert["tables"], serde_json::json!(["public.notes"]));
    let out = outcome_of(all, insert).expect("insert outcome");
    assert_eq!(out["outcome"], "ok");
    assert_eq!(out["tags"], serde_json::json!(["INSERT 0 2"]));
    assert_eq!(out["rows"], 2);
    assert!(out["duration_ms"].as_f64().is_some());

    let parsed = statement(all, "WHERE id = $1").expect("extended-protocol statement");
    assert_eq!(parsed["via"], "parse");
    assert_eq!(parsed["class"], "read");
    let out = outcome_of(all, parsed).expect("execute outcome");
    assert_eq!(out["tags"], serde_json::json!(["SELECT 1"]));

    let missing = statement(all, "no_such_table").unwrap();
    let out = outcome_of(all, missing).unwrap();
    assert_eq!(out["outcome"], "error");
    assert_eq!(out["sqlstate"], "42P01");
}

/// Folded into its record, or (when the record was written before the
/// answer came) in its own.
fn each_read_has_its_outcome_once(all: &[Value]) {
    // Every read has its outcome once: folded into its record, or (when
    // the record was written before the answer came) in its own.
    let reads: Vec<&Value> = of_type(all, "statement")
        .into_iter()
        .filter(|s| s["class"] == "read" && s["decision"] == "allow")
        .collect();
    assert!(reads.len() >= 3, "{reads:?}");
    for r in &reads {
        let separate = all
            .iter()
            .filter(|e| {
                e["type"] == "statement.outcome"
                    && e["session"] == r["session"]
                    && e["statement"] == r["statement"]
            })
            .count();
        let folded = r.get("outcome").is_some();
        assert!(
            usize::from(folded) + separate >= 1 && !(folded && separate > 0 && r["via"] == "query"),
            "{r}"
        );
    }
    assert!(
        reads.iter().any(|r| r.get("outcome").is_some()),
        "reads get one record, their outcome included: {reads:?}"
    );
}

/// A refused statement is recorded as refused, its password redacted.
async fn secrets_never_reach_the_log(p: &Proxy, all: &[Value]) {
    let alter = statement(all, "ALTER ROLE app_read").expect("refused statement recorded");
    assert_eq!(alter["decision"], "deny");
    assert_eq!(alter["class"], "privileged");
    let text = export(p, &[]).await;
    assert!(!text.contains("hunter2"), "the password was redacted");
    assert!(alter["text"].as_str().unwrap().contains("PASSWORD '***'"));
}

/// The revoke and the close, and every seq in its place.
fn revokes_closes_and_order_are_recorded(all: &[Value], grant: &str) {
    let revoked = of_type(all, "grant.revoked");
    assert_eq!(revoked[0]["grant"], grant);
    assert_eq!(revoked[0]["by"], "tester");
    let closed = of_type(all, "connection.closed");
    assert!(closed.iter().any(|c| c["identity"] == "alice"));

    // Every record's seq is its place; times never go back.
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// The public key is the signer's; the chain verifies, also pinned to a
/// checkpoint.
async fn the_log_verifies_online_and_against_a_checkpoint(p: &Proxy) {
    // The public key, online and from the data dir, is the signer's.
    let (ok, key, _) = p.veilctl(&["audit", "public-key"]).await;
    assert!(ok);
    assert_eq!(key.trim(), p.running().shared.audit.public_key());
    assert_eq!(key.trim().len(), 64);

    // Online verification, and against a checkpoint.
    let v = p.veilctl_json(&["audit", "verify"]).await;
    assert_eq!(v["ok"], true, "{v}");
    let head = p.veilctl_json(&["audit", "checkpoint"]).await;
    let pin = format!(
        "{}:{}",
        head["head"]["seq"],
        head["head"]["hash"].as_str().unwrap()
    );
    let v = p
        .veilctl_json(&["audit", "verify", "--expect-head", &pin])
        .await;
    assert_eq!(v["ok"], true, "{v}");
}

/// `--identity`, `--since` (and a bad one), and CSV.
async fn exports_filter_by_identity_and_time(p: &Proxy, all: &[Value]) {
    // Filters: by identity (every event kept is about alice), by time.
    let alice = payloads(&export(p, &["--identity", "alice"]).await);
    assert!(alice.len() > 5);
    assert!(
        alice
            .iter()
            .all(|e| e["identity"] == "alice" || e["user"] == "alice")
    );
    assert!(alice.iter().any(|e| e["type"] == "statement.outcome"));
    let future = export(p, &["--since", "2999-01-01"]).await;
    assert!(future.is_empty());
    let (ok, _, err) = p
        .veilctl(&["audit", "export", "--since", "last tuesday"])
        .await;
    assert!(!ok && err.contains("cannot read"), "{err}");
    let recent = payloads(&export(p, &["--since", "1h"]).await);
    assert!(
        recent.len() >= all.len(),
        "--since 1h holds everything above"
    );
    let csv = export(p, &["--format", "csv"]).await;
    assert!(csv.starts_with("seq,prev,payload,hash,sig\n"));
}
