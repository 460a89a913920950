//! Control databases for tests of several firewalls on one shared state
//! (`[state] backend = "postgres"`): a cluster of their own, a fresh
//! database per test, and the `veilctl` calls those tests make.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use infraveil::sandbox::{Cluster, ClusterOptions};
use serde_json::Value;

use super::child::Firewall;
use super::{payloads, veilctl};

pub const STATE_PASSWORD: &str = "state-secret-7c1f";

/// A cluster for control databases, separate from the protected one.
pub fn control() -> &'static Cluster {
    static CONTROL: OnceLock<Cluster> = OnceLock::new();
    CONTROL.get_or_init(start_control)
}

/// A control cluster of the caller's own (to stop and restart), with the
/// state role.
pub fn start_control() -> Cluster {
    let c = Cluster::start(&ClusterOptions {
        unsafe_fast: true,
        reap_on_exit: true,
        ..Default::default()
    })
    .expect("start the control cluster");
    c.psql(
        "postgres",
        &format!("CREATE ROLE veil_state LOGIN PASSWORD '{STATE_PASSWORD}'"),
    )
    .expect("create the state role");
    c
}

/// A fresh control database on `c`: (its name, its URL).
pub fn state_db_on(c: &Cluster, name: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let db = format!("state_{name}_{}", N.fetch_add(1, Ordering::Relaxed));
    c.psql(
        "postgres",
        &format!("CREATE DATABASE {db} OWNER veil_state"),
    )
    .expect("create a control database");
    (db.clone(), url_via(c.port, &db))
}

/// A fresh control database on [`control`].
pub fn state_db(name: &str) -> (String, String) {
    state_db_on(control(), name)
}

/// The URL of control database `db` reached through `port`.
pub fn url_via(port: u16, db: &str) -> String {
    format!("postgres://veil_state:{STATE_PASSWORD}@127.0.0.1:{port}/{db}")
}

/// Run `sql` in control database `db`; its output, trimmed.
pub fn ctl_sql(db: &str, sql: &str) -> String {
    control()
        .psql(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .to_owned()
}

/// Instances `fw-a` and `fw-b` on the control database at `url`, started
/// at the same moment (so their migrations race).
pub async fn pair_on(url: &str) -> (Firewall, Firewall) {
    tokio::join!(
        Firewall::start_shared(url, "fw-a", "100ms"),
        Firewall::start_shared(url, "fw-b", "100ms"),
    )
}

/// `veilctl --output json ARGS` against `fw`, which must succeed.
pub async fn ctl_json(fw: &Firewall, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = veilctl(Some(&fw.admin_url), &all).await;
    assert!(ok, "veilctl {args:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A 10-minute grant issued through `fw`: (id, secret).
pub async fn issue(fw: &Firewall, identity: &str, role: &str) -> (String, String) {
    let g = ctl_json(
        fw,
        &[
            "grants",
            "issue",
            "--identity",
            identity,
            "--role",
            role,
            "--ttl",
            "10m",
        ],
    )
    .await;
    (
        g["id"].as_str().unwrap().to_owned(),
        g["password"].as_str().unwrap().to_owned(),
    )
}

/// The pending approval requests `fw` knows of, waiting up to 10 s for
/// one to appear.
pub async fn pending_on(fw: &Firewall) -> Vec<Value> {
    for _ in 0..200 {
        let list = ctl_json(fw, &["approvals", "list"]).await;
        let list = list.as_array().cloned().unwrap_or_default();
        if !list.is_empty() {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval request appeared");
}

/// Every record of the merged export, through `fw`.
pub async fn export(fw: &Firewall) -> Vec<Value> {
    let (ok, out, err) = veilctl(Some(&fw.admin_url), &["audit", "export"]).await;
    assert!(ok, "export: {err}");
    payloads(&out)
}
