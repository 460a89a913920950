//! The audit log against real PostgreSQL and real clients: what is
//! recorded, that tampering with the store or an export is caught (by
//! `veilctl audit verify` and by an independent Python verifier), that the
//! proxy fails closed, and that a `kill -9` under write load loses no
//! acknowledged write's record.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::child::Firewall;
use common::*;
use infraveil::audit::chain;
use serde_json::Value;
use tokio_postgres::types::ToSql;

/// `veilctl` with no admin API (offline forms); (ok, stdout, stderr).
async fn veilctl_offline(args: &[&str]) -> (bool, String, String) {
    veilctl(None, args).await
}

/// Offline verification pinned to `public_key`: `source` is `--data-dir`
/// or `--file`.
async fn verify_offline(source: &str, path: &Path, public_key: &str, extra: &[&str]) -> Value {
    let path = path.display().to_string();
    let mut args = vec![
        "--output",
        "json",
        "audit",
        "verify",
        source,
        &path,
        "--public-key",
        public_key,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = veilctl_offline(&args).await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(ok, v["ok"] == true, "exit code follows the verdict: {v}");
    v
}

async fn verify_dir(dir: &Path, public_key: &str, extra: &[&str]) -> Value {
    verify_offline("--data-dir", dir, public_key, extra).await
}

async fn verify_file(file: &Path, public_key: &str, extra: &[&str]) -> Value {
    verify_offline("--file", file, public_key, extra).await
}

fn fault(v: &Value) -> (String, u64) {
    assert_eq!(v["ok"], false, "tampering must be caught: {v}");
    (
        v["problem"]["fault"].as_str().unwrap().to_owned(),
        v["problem"]["seq"].as_u64().unwrap(),
    )
}

/// Every record of the live log, through `veilctl audit export`.
async fn export(p: &Proxy, extra: &[&str]) -> String {
    let mut args = vec!["audit", "export"];
    args.extend_from_slice(extra);
    let (ok, out, err) = p.veilctl(&args).await;
    assert!(ok, "export failed: {err}");
    out
}

/// Export until `pred` holds for the payloads (reads are flushed within
/// the read window, outcomes after the answer).
async fn export_until(p: &Proxy, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let all = payloads(&export(p, &[]).await);
        if pred(&all) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = payloads(&export(p, &[]).await);
    panic!("never recorded: {what}\n{all:#?}");
}

fn of_type<'a>(all: &'a [Value], t: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["type"] == t).collect()
}

fn statement<'a>(all: &'a [Value], text: &str) -> Option<&'a Value> {
    all.iter()
        .find(|e| e["type"] == "statement" && e["text"].as_str().is_some_and(|t| t.contains(text)))
}

/// A statement's outcome: in its own record for a read whose answer came
/// while its record was still held (one record per read), else in a
/// `statement.outcome` record.
fn outcome_of<'a>(all: &'a [Value], stmt: &'a Value) -> Option<&'a Value> {
    if stmt.get("outcome").is_some() {
        return Some(stmt);
    }
    all.iter().find(|e| {
        e["type"] == "statement.outcome"
            && e["session"] == stmt["session"]
            && e["statement"] == stmt["statement"]
    })
}

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
    for t in [
        "daemon.start",
        "policy.loaded",
        "grant.issued",
        "connection.opened",
    ] {
        assert!(!of_type(&all, t).is_empty(), "no {t} event");
    }
    let ok = of_type(&all, "auth.succeeded");
    assert_eq!(ok[0]["identity"], "alice");
    assert_eq!(ok[0]["grant"], grant.as_str());
    let failed = of_type(&all, "auth.failed");
    assert_eq!(failed[0]["user"], "alice");
    assert!(failed[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let opened = of_type(&all, "connection.opened");
    assert_eq!(opened[0]["tls"], false);
    assert!(
        opened[0]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    let insert = statement(&all, "INSERT INTO notes").expect("insert recorded");
    assert_eq!(insert["class"], "write");
    assert_eq!(insert["decision"], "allow");
    assert_eq!(insert["identity"], "alice");
    assert_eq!(insert["role"], "deployer");
    assert_eq!(insert["grant"], grant.as_str());
    assert!(
        insert["rule"].as_str().is_some(),
        "the rule is named: {insert}"
    );
    assert_eq!(insert["tables"], serde_json::json!(["public.notes"]));
    let out = outcome_of(&all, insert).expect("insert outcome");
    assert_eq!(out["outcome"], "ok");
    assert_eq!(out["tags"], serde_json::json!(["INSERT 0 2"]));
    assert_eq!(out["rows"], 2);
    assert!(out["duration_ms"].as_f64().is_some());

    let parsed = statement(&all, "WHERE id = $1").expect("extended-protocol statement");
    assert_eq!(parsed["via"], "parse");
    assert_eq!(parsed["class"], "read");
    let out = outcome_of(&all, parsed).expect("execute outcome");
    assert_eq!(out["tags"], serde_json::json!(["SELECT 1"]));

    let missing = statement(&all, "no_such_table").unwrap();
    let out = outcome_of(&all, missing).unwrap();
    assert_eq!(out["outcome"], "error");
    assert_eq!(out["sqlstate"], "42P01");

    // Every read has its outcome once: folded into its record, or (when
    // the record was written before the answer came) in its own.
    let reads: Vec<&Value> = of_type(&all, "statement")
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

    let alter = statement(&all, "ALTER ROLE app_read").expect("refused statement recorded");
    assert_eq!(alter["decision"], "deny");
    assert_eq!(alter["class"], "privileged");
    let text = export(&p, &[]).await;
    assert!(!text.contains("hunter2"), "the password was redacted");
    assert!(alter["text"].as_str().unwrap().contains("PASSWORD '***'"));

    let revoked = of_type(&all, "grant.revoked");
    assert_eq!(revoked[0]["grant"], grant.as_str());
    assert_eq!(revoked[0]["by"], "tester");
    let closed = of_type(&all, "connection.closed");
    assert!(closed.iter().any(|c| c["identity"] == "alice"));

    // Every record's seq is its place; times never go back.
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

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

    // Filters: by identity (every event kept is about alice), by time.
    let alice = payloads(&export(&p, &["--identity", "alice"]).await);
    assert!(alice.len() > 5);
    assert!(
        alice
            .iter()
            .all(|e| e["identity"] == "alice" || e["user"] == "alice")
    );
    assert!(alice.iter().any(|e| e["type"] == "statement.outcome"));
    let future = export(&p, &["--since", "2999-01-01"]).await;
    assert!(future.is_empty());
    let (ok, _, err) = p
        .veilctl(&["audit", "export", "--since", "last tuesday"])
        .await;
    assert!(!ok && err.contains("cannot read"), "{err}");
    let recent = payloads(&export(&p, &["--since", "1h"]).await);
    assert!(
        recent.len() >= all.len(),
        "--since 1h holds everything above"
    );
    let csv = export(&p, &["--format", "csv"]).await;
    assert!(csv.starts_with("seq,prev,payload,hash,sig\n"));

    // Metrics say the log is healthy and growing.
    let m = p.admin_get("/metrics").await;
    assert!(m.contains("infraveil_audit_healthy 1"), "{m}");
    p.shutdown().await;
}

/// Copy a stopped daemon's data directory (to tamper with a copy per case).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Open the copy's audit tree the way someone with the disk would. The
/// daemon stores records in chunks (`infraveil::audit::layout`); the tree
/// is first rewritten one record a value, as JSON (the layout logs had
/// before chunks, which the daemon still reads), so a case can edit,
/// drop or swap single records by seq.
fn with_tree(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.join("state")).unwrap();
    let tree = db.open_tree("audit").unwrap();
    let mut records = Vec::new();
    for item in tree.iter() {
        let (_, v) = item.unwrap();
        records.extend(infraveil::audit::layout::decode(&v).unwrap());
    }
    tree.clear().unwrap();
    for r in &records {
        put(&tree, r.seq, r);
    }
    f(&tree);
    db.flush().unwrap();
}

fn record(tree: &sled::Tree, seq: u64) -> chain::Record {
    serde_json::from_slice(&tree.get(seq.to_be_bytes()).unwrap().unwrap()).unwrap()
}

fn put(tree: &sled::Tree, seq: u64, r: &chain::Record) {
    tree.insert(seq.to_be_bytes(), serde_json::to_vec(r).unwrap())
        .unwrap();
}

/// 40 reads pipelined on one connection: their records reach the log
/// together, and the writer takes them as batches under one signature each.
async fn many_reads(c: tokio_postgres::Client) -> tokio_postgres::Client {
    let c = std::sync::Arc::new(c);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let c = c.clone();
        set.spawn(async move { c.simple_query(&format!("SELECT {i}")).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    std::sync::Arc::into_inner(c).expect("every read finished")
}

/// A stopped daemon's data dir with some history, and its public key.
async fn history() -> (PathBuf, String, PathBuf) {
    let root = scratch_dir();
    let data = root.join("data");
    let p = Proxy::start(ProxyOptions {
        data_dir: Some(data.clone()),
        ..ProxyOptions::with_grants()
    })
    .await;
    let db = fresh_db("audit_tamper");
    let pw = p.issue("alice", "deployer").await;
    let c = p.connect_with("alice", &db, &pw).await;
    c.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    for i in 0..10 {
        c.batch_execute(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap();
    }
    // Many records at once: the writer takes them as one batch, under one
    // signature.
    let c = many_reads(c).await;
    let key = p.running().shared.audit.public_key().to_owned();

    // While the daemon runs, offline verification is refused, not racy.
    let (ok, _, err) =
        veilctl_offline(&["audit", "verify", "--data-dir", &data.display().to_string()]).await;
    assert!(!ok && err.contains("daemon stopped"), "{err}");

    drop(c);
    p.shutdown().await;
    (data, key, root)
}

#[tokio::test]
async fn tampering_with_the_stored_log_is_caught() {
    let (data, key, root) = history().await;
    let v = verify_dir(&data, &key, &[]).await;
    assert_eq!(v["ok"], true, "{v}");
    let head_seq = v["head_seq"].as_u64().unwrap();
    let pin = format!("{head_seq}:{}", v["head_hash"].as_str().unwrap());
    assert!(head_seq > 20, "{v}");
    let k = head_seq / 2;

    let case = |name: &str| {
        let d = root.join(name);
        copy_dir(&data, &d);
        d
    };

    // Edit a payload (the record keeps its old hash and signature).
    let d = case("edit");
    with_tree(&d, |t| {
        let mut r = record(t, k);
        r.payload = r.payload.replacen("\"type\"", "\"tampered\":1,\"type\"", 1);
        put(t, k, &r);
    });
    assert_eq!(fault(&verify_dir(&d, &key, &[]).await), ("hash".into(), k));

    // ...and recompute its hash: then it no longer matches its signature
    // if it has one, and the next record no longer links to it.
    let d = case("edit-rehash");
    let mut signed = false;
    with_tree(&d, |t| {
        let mut r = record(t, k);
        signed = r.sig.is_some();
        r.payload = r.payload.replacen("\"type\"", "\"tampered\":1,\"type\"", 1);
        let prev: [u8; 32] = hex::decode(&r.prev).unwrap().try_into().unwrap();
        r.hash = hex::encode(chain::hash(&prev, &r.payload));
        put(t, k, &r);
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        if signed {
            ("signature".into(), k)
        } else {
            ("link".into(), k + 1)
        }
    );

    // Drop a record.
    let d = case("drop");
    with_tree(&d, |t| {
        t.remove(k.to_be_bytes()).unwrap();
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("gap".into(), k + 1)
    );

    // Swap two records.
    let d = case("swap");
    with_tree(&d, |t| {
        let (a, b) = (record(t, k), record(t, k + 1));
        put(t, k, &b);
        put(t, k + 1, &a);
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("order".into(), k + 1)
    );

    // Which records carry a signature (the last of each batch).
    let mut signed_seqs = Vec::new();
    with_tree(&data, |t| {
        for s in 1..=head_seq {
            if record(t, s).sig.is_some() {
                signed_seqs.push(s);
            }
        }
    });
    assert!(signed_seqs.len() >= 2, "{signed_seqs:?}");
    assert_eq!(signed_seqs.last(), Some(&head_seq), "the log ends signed");
    assert!(
        signed_seqs.len() < head_seq as usize,
        "batches share one signature: {signed_seqs:?}"
    );

    // Truncate the tail at a batch's end: the chain alone cannot tell, a
    // checkpoint can. Cut inside a batch, the tail is unsigned.
    let cut = signed_seqs[signed_seqs.len() - 2];
    let d = case("truncate");
    with_tree(&d, |t| {
        for s in cut + 1..=head_seq {
            t.remove(s.to_be_bytes()).unwrap();
        }
    });
    assert_eq!(verify_dir(&d, &key, &[]).await["ok"], true);
    assert_eq!(
        fault(&verify_dir(&d, &key, &["--expect-head", &pin]).await),
        ("truncated".into(), cut)
    );
    if let Some(inside) = (1..head_seq).rev().find(|s| !signed_seqs.contains(s)) {
        let d = case("truncate-inside");
        with_tree(&d, |t| {
            for s in inside + 1..=head_seq {
                t.remove(s.to_be_bytes()).unwrap();
            }
        });
        assert_eq!(fault(&verify_dir(&d, &key, &[]).await).0, "unsigned");
    }

    // Remove the last signature: what it vouched for is vouched for by
    // nothing.
    let d = case("unsign");
    with_tree(&d, |t| {
        let mut r = record(t, head_seq);
        r.sig = None;
        put(t, head_seq, &r);
    });
    assert_eq!(fault(&verify_dir(&d, &key, &[]).await).0, "unsigned");

    // Forge records after the last signature, with the daemon stopped: they
    // link, but nothing signs them. verify fails, the daemon refuses to
    // chain onto them, and once set aside it starts again.
    let d = case("append");
    with_tree(&d, |t| {
        let last = record(t, head_seq);
        let mut prev: [u8; 32] = hex::decode(&last.hash).unwrap().try_into().unwrap();
        for s in head_seq + 1..=head_seq + 3 {
            let payload = format!(
                "{{\"type\":\"statement\",\"identity\":\"mallory\",\"text\":\"forged\",\"seq\":{s}}}"
            );
            let (r, h) = chain::seal(s, &prev, payload, None);
            put(t, s, &r);
            prev = h;
        }
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("unsigned".into(), head_seq + 1)
    );
    let mut config = ProxyOptions::with_grants();
    config.data_dir = Some(d.clone());
    let refused = Proxy::try_start(config)
        .await
        .err()
        .expect("refuses to start");
    assert!(
        refused.contains("no signature vouches for") && refused.contains("set-aside"),
        "{refused}"
    );
    let (ok, out, err) =
        veilctl_offline(&["audit", "set-aside", "--data-dir", &d.display().to_string()]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{} to {}", head_seq + 1, head_seq + 3)),
        "{out}"
    );
    assert_eq!(verify_dir(&d, &key, &[]).await["ok"], true);
    let mut config = ProxyOptions::with_grants();
    config.data_dir = Some(d.clone());
    Proxy::try_start(config)
        .await
        .expect("starts once the forged tail is set aside")
        .shutdown()
        .await;

    // Re-sign the whole log with another key (and replace the key file):
    // consistent on its own, caught against the public key kept elsewhere.
    let d = case("resign");
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    with_tree(&d, |t| {
        let mut prev = chain::GENESIS;
        for s in 1..=head_seq {
            let old = record(t, s);
            let (r, h) = chain::seal(s, &prev, old.payload, old.sig.map(|_| &other));
            put(t, s, &r);
            prev = h;
        }
    });
    std::fs::write(
        d.join(infraveil::daemon::AUDIT_KEY_FILE),
        format!("{}\n", hex::encode(other.to_bytes())),
    )
    .unwrap();
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("signature".into(), signed_seqs[0])
    );
    // Without the pinned key veilctl trusts the data dir's key, and says so.
    let (ok, _, err) =
        veilctl_offline(&["audit", "verify", "--data-dir", &d.display().to_string()]).await;
    assert!(ok && err.contains("--public-key"), "{err}");

    // The untouched original still verifies, text output included.
    let (ok, out, _) = veilctl_offline(&[
        "audit",
        "verify",
        "--data-dir",
        &data.display().to_string(),
        "--public-key",
        &key,
        "--expect-head",
        &pin,
    ])
    .await;
    assert!(ok && out.starts_with("ok: "), "{out}");
    let (ok, out, _) = veilctl_offline(&[
        "audit",
        "public-key",
        "--data-dir",
        &data.display().to_string(),
    ])
    .await;
    assert!(ok);
    assert_eq!(out.trim(), key);
}

#[tokio::test]
async fn tampering_with_an_export_is_caught_and_python_agrees_with_the_format() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let db = fresh_db("audit_export");
    let pw = p.issue("alice", "deployer").await;
    let c = p.connect_with("alice", &db, &pw).await;
    c.batch_execute("CREATE TABLE t (id int, body text)")
        .await
        .unwrap();
    for i in 0..10 {
        // Quotes, commas, backslashes and non-ASCII survive both formats.
        c.batch_execute(&format!(
            "INSERT INTO t VALUES ({i}, 'a \"q\", b\\c — é {i}')"
        ))
        .await
        .unwrap();
    }
    let c = many_reads(c).await;
    drop(c);
    // Reads are written within the read window: let the log settle, so
    // both exports below hold the same records.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let key = p.running().shared.audit.public_key().to_owned();
    let dir = scratch_dir();
    let jsonl = export(&p, &[]).await;
    let file = dir.join("audit.jsonl");
    std::fs::write(&file, &jsonl).unwrap();
    let csv_file = dir.join("audit.csv");
    std::fs::write(&csv_file, export(&p, &["--format", "csv"]).await).unwrap();
    let lines: Vec<&str> = jsonl.lines().collect();
    let n = lines.len() as u64;
    assert!(n > 20);

    let v = verify_file(&file, &key, &[]).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], n);
    let csv = verify_file(&csv_file, &key, &[]).await;
    assert_eq!(csv["ok"], true, "{csv}");
    assert_eq!(csv["head_hash"], v["head_hash"]);
    let pin = format!("{}:{}", v["head_seq"], v["head_hash"].as_str().unwrap());

    // An independent verifier reads the same bytes the same way.
    let py = python_verify(&file, &key).await;
    assert!(py.0, "python verifier: {}", py.2);
    assert_eq!(
        py.1.trim(),
        format!(
            "ok {n} {} {}",
            v["head_hash"].as_str().unwrap(),
            v["signatures"]
        )
    );
    let records: Vec<chain::Record> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let signed: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].sig.is_some())
        .collect();
    assert_eq!(signed.last(), Some(&(records.len() - 1)), "ends signed");
    assert!(signed.len() < records.len(), "one signature per batch");

    let write = |name: &str, lines: &[String]| {
        let f = dir.join(name);
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&f, text).unwrap();
        f
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let k = (n / 2) as usize;

    let mut edited = owned.clone();
    let mut r: chain::Record = serde_json::from_str(&edited[k]).unwrap();
    r.payload = r.payload.replacen("alice", "mallory", 1);
    edited[k] = serde_json::to_string(&r).unwrap();
    let f = write("edited.jsonl", &edited);
    assert_eq!(
        fault(&verify_file(&f, &key, &[]).await),
        ("hash".into(), k as u64 + 1)
    );
    assert!(!python_verify(&f, &key).await.0, "python catches the edit");

    let mut dropped = owned.clone();
    dropped.remove(k);
    let f = write("dropped.jsonl", &dropped);
    assert_eq!(
        fault(&verify_file(&f, &key, &[]).await),
        ("gap".into(), k as u64 + 2)
    );
    assert!(!python_verify(&f, &key).await.0);

    let mut swapped = owned.clone();
    swapped.swap(k, k + 1);
    let f = write("swapped.jsonl", &swapped);
    assert_eq!(
        fault(&verify_file(&f, &key, &[]).await),
        ("order".into(), k as u64 + 2)
    );

    // Cut at a batch's end: only a checkpoint tells. Inside a batch, or
    // with the last signature removed, the tail is unsigned (python agrees).
    let cut = signed[signed.len() - 2];
    let truncated = owned[..=cut].to_vec();
    let f = write("truncated.jsonl", &truncated);
    assert_eq!(verify_file(&f, &key, &[]).await["ok"], true);
    assert_eq!(
        fault(&verify_file(&f, &key, &["--expect-head", &pin]).await).0,
        "truncated"
    );
    if let Some(inside) = (0..records.len() - 1).rev().find(|i| !signed.contains(i)) {
        let f = write("truncated-inside.jsonl", &owned[..=inside]);
        assert_eq!(fault(&verify_file(&f, &key, &[]).await).0, "unsigned");
        assert!(!python_verify(&f, &key).await.0);
    }
    let mut unsigned = owned.clone();
    let mut last: chain::Record = serde_json::from_str(unsigned.last().unwrap()).unwrap();
    last.sig = None;
    *unsigned.last_mut().unwrap() = serde_json::to_string(&last).unwrap();
    let f = write("unsigned.jsonl", &unsigned);
    assert_eq!(fault(&verify_file(&f, &key, &[]).await).0, "unsigned");
    assert!(!python_verify(&f, &key).await.0);

    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let other_key = hex::encode(other.verifying_key().to_bytes());
    assert_eq!(
        fault(&verify_file(&file, &other_key, &[]).await),
        ("signature".into(), records[signed[0]].seq)
    );
    assert!(!python_verify(&file, &other_key).await.0);

    let mut bad_csv = std::fs::read_to_string(&csv_file).unwrap();
    bad_csv = bad_csv.replacen("INSERT INTO t VALUES (3", "INSERT INTO t VALUES (4", 1);
    let f = dir.join("edited.csv");
    std::fs::write(&f, bad_csv).unwrap();
    assert_eq!(fault(&verify_file(&f, &key, &[]).await).0, "hash");

    let f = write("garbage.jsonl", &[owned[0].clone(), "{not json".into()]);
    assert_eq!(
        fault(&verify_file(&f, &key, &[]).await),
        ("malformed".into(), 2)
    );

    // A filtered export has gaps by design: each record still checks.
    let only = export(&p, &["--identity", "alice"]).await;
    let f = dir.join("alice.jsonl");
    std::fs::write(&f, only).unwrap();
    assert_eq!(fault(&verify_file(&f, &key, &[]).await).0, "gap");
    let filtered = verify_file(&f, &key, &["--allow-gaps"]).await;
    assert_eq!(filtered["ok"], true, "{filtered}");
    // Records whose signature is on a record it leaves out are counted as
    // unvouched rather than passed off as verified (chain.rs tests the
    // count).
    assert!(filtered["unvouched"].is_u64(), "{filtered}");
    p.shutdown().await;
}

/// `python3 testdata/audit/verify.py FILE KEY`: (ok, stdout, stderr).
async fn python_verify(file: &Path, key: &str) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/audit/verify.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(file)
        .arg(key)
        .output()
        .await
        .expect("run python3 (and `pip install cryptography`)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn statements_are_refused_when_the_log_cannot_be_written() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let db = fresh_db("audit_closed");
    let pw = p.issue("alice", "deployer").await;
    let c = p.connect_with("alice", &db, &pw).await;
    let one: i32 = scalar(&c, "SELECT 1").await;
    assert_eq!(one, 1);
    p.running().shared.audit.halt_for_test();
    for sql in ["SELECT 1", "CREATE TABLE t (id int)"] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "58030", "{sql}: {e}");
        let msg = e.as_db_error().unwrap().message().to_owned();
        assert!(msg.contains("audit log"), "{msg}");
    }
    // Extended protocol too.
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

/// How a writer in the crash test writes its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Style {
    /// One simple-protocol `INSERT` a transaction (autocommit).
    Simple,
    /// A named prepared statement, Bind/Execute each row (autocommit).
    Prepared,
    /// `BEGIN`, two `INSERT`s and `COMMIT`, each its own `Query`: the
    /// inserts go upstream at once, the `COMMIT` waits for their records.
    Block,
    /// `BEGIN; INSERT …; COMMIT` in one string.
    OneString,
    /// A transaction of prepared executions (extended protocol).
    PreparedBlock,
    /// The same with the executions pipelined.
    Pipelined,
    /// `PREPARE TRANSACTION`, then `COMMIT PREPARED`.
    TwoPhase,
}

const STYLES: [Style; 9] = [
    Style::Simple,
    Style::Simple,
    Style::Prepared,
    Style::Prepared,
    Style::Block,
    Style::OneString,
    Style::PreparedBlock,
    Style::Pipelined,
    Style::TwoPhase,
];

/// Write rows `(w, i)` in `style` until the connection fails; each
/// committed row goes into `acked` once its commit is answered.
async fn write_rows(
    client: tokio_postgres::Client,
    w: i32,
    style: Style,
    acked: Arc<std::sync::Mutex<BTreeSet<(i32, i32)>>>,
) {
    let marker = format!("INSERT INTO crash /* writer {w} */ VALUES ($1, $2)");
    let stmt = match style {
        Style::Prepared | Style::PreparedBlock | Style::Pipelined => {
            Some(client.prepare(&marker).await.unwrap())
        }
        _ => None,
    };
    let q = |w: i32, i: i32| format!("INSERT INTO crash VALUES ({w}, {i})");
    for i in (0..).step_by(2) {
        let rows = [(w, i), (w, i + 1)];
        let j = i + 1;
        let done: Result<usize, tokio_postgres::Error> = async {
            match style {
                Style::Simple => {
                    client.batch_execute(&q(w, i)).await?;
                    Ok(1)
                }
                Style::Prepared => {
                    client.execute(stmt.as_ref().unwrap(), &[&w, &i]).await?;
                    Ok(1)
                }
                Style::Block => {
                    client.batch_execute("BEGIN").await?;
                    client.batch_execute(&q(w, i)).await?;
                    client.batch_execute(&q(w, i + 1)).await?;
                    client.batch_execute("COMMIT").await?;
                    Ok(2)
                }
                Style::OneString => {
                    client
                        .batch_execute(&format!("BEGIN; {}; {}; COMMIT", q(w, i), q(w, i + 1)))
                        .await?;
                    Ok(2)
                }
                Style::PreparedBlock => {
                    client.batch_execute("BEGIN").await?;
                    let s = stmt.as_ref().unwrap();
                    client.execute(s, &[&w, &i]).await?;
                    client.execute(s, &[&w, &j]).await?;
                    client.batch_execute("COMMIT").await?;
                    Ok(2)
                }
                Style::Pipelined => {
                    client.batch_execute("BEGIN").await?;
                    let s = stmt.as_ref().unwrap();
                    let (first, second): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
                        (&[&w, &i], &[&w, &j]);
                    let (a, b) = tokio::join!(client.execute(s, first), client.execute(s, second));
                    a?;
                    b?;
                    client.batch_execute("COMMIT").await?;
                    Ok(2)
                }
                Style::TwoPhase => {
                    client.batch_execute("BEGIN").await?;
                    client.batch_execute(&q(w, i)).await?;
                    client
                        .batch_execute(&format!("PREPARE TRANSACTION 'crash_{w}_{i}'"))
                        .await?;
                    client
                        .batch_execute(&format!("COMMIT PREPARED 'crash_{w}_{i}'"))
                        .await?;
                    Ok(1)
                }
            }
        }
        .await;
        match done {
            Ok(n) => acked.lock().unwrap().extend(rows[..n].iter().copied()),
            Err(_) => break,
        }
    }
}

/// Pull the plug on the firewall under write load of every kind: every row
/// PostgreSQL committed has its durable record, whether its statement went
/// upstream after its record was durable (autocommit) or before, inside a
/// block whose commit waited for it.
#[tokio::test]
async fn kill_9_under_write_load_loses_no_acknowledged_record() {
    crash(&STYLES, "100ms", 600).await;
}

/// Only explicit blocks, a few of them, and records nobody waits for held
/// for 5 s: nothing but the commits makes the log durable, so a `COMMIT`
/// that did not wait for the records of the inserts before it would leave
/// every row without one.
#[tokio::test]
async fn kill_9_inside_blocks_finds_every_committed_row_recorded() {
    crash(
        &[Style::Block, Style::PreparedBlock, Style::Pipelined],
        "5s",
        30,
    )
    .await;
}

/// Write with a writer per style until `rows` are committed, kill -9 the
/// firewall, and check the log holds every row PostgreSQL committed.
async fn crash(styles: &[Style], read_window: &str, rows: usize) {
    // Its own cluster: two-phase commit needs max_prepared_transactions.
    let c = private_cluster(infraveil::sandbox::ClusterOptions {
        settings: vec![("max_prepared_transactions".into(), "20".into())],
        ..Default::default()
    });
    let db = "audit_crash";
    c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app_owner"))
        .unwrap();
    c.psql(
        db,
        "CREATE TABLE crash (w int, i int); ALTER TABLE crash OWNER TO app_owner;",
    )
    .unwrap();
    let mut fw = Firewall::start_before(c.port, read_window).await;

    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut tasks = vec![];
    for (w, style) in styles.iter().copied().enumerate() {
        let acked = acked.clone();
        let client = fw.connect(db).await;
        tasks.push(tokio::spawn(async move {
            write_rows(client, w as i32, style, acked).await;
        }));
    }
    // Let the load run until every writer has committed, then pull the
    // plug mid-stream.
    loop {
        {
            let a = acked.lock().unwrap();
            let writers: BTreeSet<i32> = a.iter().map(|(w, _)| *w).collect();
            if a.len() >= rows && writers.len() == styles.len() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fw.kill_9().await;
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // PostgreSQL's view: every row committed, acknowledged or not.
    let rows: BTreeSet<(i32, i32)> = c
        .psql(db, "SELECT w, i FROM crash")
        .unwrap()
        .lines()
        .map(|l| {
            let (w, i) = l.split_once('|').unwrap();
            (w.parse().unwrap(), i.parse().unwrap())
        })
        .collect();
    assert!(
        acked.is_subset(&rows),
        "PostgreSQL kept every acknowledged row"
    );

    // Restart on the same data dir: the chain verifies, continues, and
    // holds a record for every row that reached PostgreSQL.
    let all = fw.restart_and_export().await;
    // Rows whose text is in a statement record (simple protocol).
    let recorded: BTreeSet<(i32, i32)> = all
        .iter()
        .filter(|e| e["type"] == "statement" && e["decision"] == "allow")
        .flat_map(|e| {
            let text = e["text"].as_str().unwrap_or_default().to_owned();
            text.split("INSERT INTO crash VALUES (")
                .skip(1)
                .filter_map(|t| {
                    let (w, i) = t.split_once(')')?.0.split_once(", ")?;
                    Some((w.parse().ok()?, i.parse().ok()?))
                })
                .collect::<Vec<(i32, i32)>>()
        })
        .collect();
    let by_text = |w: i32| {
        matches!(
            styles[w as usize],
            Style::Simple | Style::Block | Style::OneString | Style::TwoPhase
        )
    };
    let missing: Vec<_> = rows
        .iter()
        .filter(|(w, _)| by_text(*w))
        .filter(|r| !recorded.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "rows in PostgreSQL without an audit record: {missing:?}"
    );
    // Prepared executions carry no text: each has a durable
    // `statement.execute` record, so there are at least as many as rows.
    for (w, style) in styles.iter().enumerate() {
        if by_text(w as i32) {
            continue;
        }
        let marker = format!("/* writer {w} */");
        let parse = all
            .iter()
            .find(|e| e["type"] == "statement" && e["text"].as_str().unwrap().contains(&marker))
            .expect("the prepared statement's record");
        assert_eq!(parse["via"], "parse");
        let executes = all
            .iter()
            .filter(|e| {
                e["type"] == "statement.execute"
                    && e["session"] == parse["session"]
                    && e["statement"] == parse["statement"]
            })
            .count();
        let written = rows.iter().filter(|(rw, _)| *rw == w as i32).count();
        assert!(written > 0, "writer {w} ({style:?}) wrote");
        assert!(
            executes >= written,
            "writer {w} ({style:?}): {written} rows but {executes} execute records"
        );
    }
    for w in 0..styles.len() as i32 {
        assert!(
            rows.iter().any(|(rw, _)| *rw == w),
            "writer {w} committed rows"
        );
    }
    let starts = all.iter().filter(|e| e["type"] == "daemon.start").count();
    let stops = all.iter().filter(|e| e["type"] == "daemon.stop").count();
    assert_eq!(
        (starts, stops),
        (2, 0),
        "a start after the crash, no stop before it"
    );
}
