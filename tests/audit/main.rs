//! The audit log against real PostgreSQL and real clients: what is
//! recorded, that tampering with the store or an export is caught (by
//! `veilctl audit verify` and by an independent Python verifier), that the
//! proxy fails closed, and that a `kill -9` under write load loses no
//! acknowledged write's record.
//!
//! One binary, a file per family: [`events`] (what is recorded), [`tamper`]
//! (a changed store is caught), [`export`] (a changed export is caught, and
//! Python agrees with the format), [`fail_closed`] (a failing disk stops
//! statements) and [`crash`] (`kill -9` loses no acknowledged record).

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod events;
mod export;
mod fail_closed;
mod tamper;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

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

/// 40 reads pipelined on one connection: their records reach the log
/// together, and the writer takes them as batches under one signature each.
pub async fn many_reads(c: tokio_postgres::Client) -> tokio_postgres::Client {
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
