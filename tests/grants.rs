//! Just-in-time grants end to end, against real PostgreSQL: `veilctl grants
//! issue` → connect → query; wrong secrets; expiry and revocation ending live
//! `psql` and tokio-postgres sessions; policy refusals; restarts; concurrent
//! issue/revoke under load; a second daemon on the same data directory.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_connect_query_and_list() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    // Without a grant, nobody gets in: same error as a wrong password.
    let e = p.try_connect("alice", "app", PASSWORD).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");

    let issued = p
        .veilctl_json(&[
            "grants",
            "issue",
            "--identity",
            "alice",
            "--role",
            "readonly",
            "--ttl",
            "1h",
            "--reason",
            "INC-4711 look at orders",
        ])
        .await;
    for key in [
        "id",
        "identity",
        "role",
        "expires_at",
        "password",
        "database_url",
    ] {
        assert!(issued.get(key).is_some(), "{key} missing in {issued}");
    }
    let password = issued["password"].as_str().unwrap();
    assert!(password.len() >= 32, "at least 128 bits");
    assert_eq!(issued["identity"], "alice");
    assert_eq!(issued["issued_by"], "tester");

    let c = p.connect_with("alice", "app", password).await;
    let who: String = scalar(&c, "SELECT current_user::text").await;
    assert_eq!(
        who, "app_read",
        "the grant's role decides the upstream user"
    );
    let n: i64 = scalar(&c, "SELECT count(*) FROM customers").await;
    assert_eq!(n, 50);
    // The role's scope applies: readonly cannot write.
    let e = c
        .batch_execute("DELETE FROM orders WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");

    // psql with the printed URL (pointing at database `postgres` by default).
    let url = issued["database_url"]
        .as_str()
        .unwrap()
        .replace("/postgres", "/app");
    let (ok, out, err) = psql(&url, &["-c", "SELECT count(*) FROM orders"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "200");

    // A second grant for the same identity works alongside the first, each
    // with its own role.
    let (_, writer_pw) = p.grant("alice", "writer", "10m").await;
    let w = p.connect_with("alice", "app", &writer_pw).await;
    let who: String = scalar(&w, "SELECT current_user::text").await;
    assert_eq!(who, "app_write");
    let who: String = scalar(&c, "SELECT current_user::text").await;
    assert_eq!(who, "app_read");

    // list: table and JSON, with who issued it and why.
    let (ok, text, _) = p.veilctl(&["grants", "list"]).await;
    assert!(ok);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("INC-4711 look at orders") && text.contains("tester"),
        "{text}"
    );
    let list = p.veilctl_json(&["grants", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|g| g.get("password").is_none())
    );

    // The verifier is all that is stored: the secret is nowhere in the store.
    let store_bytes = read_all(&p.config.data_dir);
    assert!(
        !store_bytes
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the secret must not be stored"
    );

    // Metrics count active grants.
    let m = p.admin_get("/metrics").await;
    assert!(m.contains("infraveil_grants_active 2"), "{m}");
    assert!(
        m.contains("infraveil_statements_total{class=\"write\",decision=\"deny\"} 1"),
        "{m}"
    );
    assert!(
        !m.contains("infraveil_statements_total{class=\"read\",decision=\"allow\"} 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_unknown_identity_and_no_grant_fail_alike() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let (_, password) = p.grant("alice", "readonly", "5m").await;
    let mut messages = vec![];
    for (user, pw) in [
        ("alice", "not-the-secret"),
        ("alice", &password[..password.len() - 1]),
        ("mallory", password.as_str()),
        ("oncall", password.as_str()), // defined, but holds no grant
    ] {
        let e = p.try_connect(user, "app", pw).await.unwrap_err();
        assert_eq!(sqlstate(&e), "28P01", "{user}");
        messages.push(e.as_db_error().unwrap().message().replace(user, "X"));
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "{messages:?}");
    // Another identity's secret is no good either.
    let (_, oncall_pw) = p.grant("oncall", "readonly", "5m").await;
    let e = p.try_connect("alice", "app", &oncall_pw).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    p.connect_with("oncall", "app", &oncall_pw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_ends_live_sessions_and_rolls_back_their_transaction() {
    let db = fresh_db("expiry");
    cluster()
        .psql(&db, "CREATE TABLE t (x int); GRANT ALL ON t TO app_write;")
        .unwrap();
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let issued_at = Instant::now();
    let (id, pw) = p.grant("alice", "writer", "3s").await;
    let expires = issued_at + Duration::from_secs(3);

    // An idle session, one inside a transaction with an uncommitted write,
    // and psql running a long query.
    let (_idle, idle_end) = p.connect_watched("alice", &db, &pw).await;
    let (tx, tx_end) = p.connect_watched("alice", &db, &pw).await;
    tx.batch_execute("BEGIN; INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let url = format!("postgres://alice:{pw}@127.0.0.1:{}/{db}", p.port);
    let long = tokio::spawn(async move {
        let r = psql(&url, &["-c", "SELECT pg_sleep(30)"]).await;
        (Instant::now(), r)
    });

    let (at, end) = tokio::time::timeout(Duration::from_secs(15), idle_end)
        .await
        .expect("idle session ended")
        .unwrap();
    assert!(
        end.starts_with("57P01") && end.contains(&id) && end.contains("expired"),
        "{end}"
    );
    assert!(at >= expires - Duration::from_millis(1100), "ended early");
    // The product promises one second; the margin is for a loaded machine.
    let late = at.saturating_duration_since(expires);
    eprintln!("idle session ended {late:?} after expiry");
    assert!(late < Duration::from_secs(3), "ended {late:?} after expiry");

    let (_, end) = tx_end.await.unwrap();
    assert!(end.contains("expired"), "{end}");
    let (psql_at, (ok, _, err)) = long.await.unwrap();
    assert!(!ok && err.contains("expired"), "{err}");
    assert!(
        psql_at < expires + Duration::from_secs(3),
        "psql ended late"
    );

    // The uncommitted insert was rolled back with the upstream connection.
    let rows = cluster().psql(&db, "SELECT count(*) FROM t").unwrap();
    assert_eq!(rows.trim(), "0");

    // New connections with the expired grant fail like a wrong password.
    let e = p.try_connect("alice", &db, &pw).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let list = p.veilctl_json(&["grants", "list", "--all"]).await;
    assert_eq!(list[0]["status"], "expired", "{list}");
    assert_eq!(
        p.veilctl_json(&["grants", "list"]).await,
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_ends_live_sessions_within_a_second() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let (id, pw) = p.grant("alice", "readonly", "1h").await;
    let (other_id, other_pw) = p.grant("alice", "readonly", "1h").await;
    let (c, end) = p.connect_watched("alice", "app", &pw).await;
    let (other, _) = p.connect_watched("alice", "app", &other_pw).await;
    let url = format!("postgres://alice:{pw}@127.0.0.1:{}/app", p.port);
    let long = tokio::spawn(async move { psql(&url, &["-c", "SELECT pg_sleep(30)"]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t0 = Instant::now();
    let (ok, out, err) = p
        .veilctl(&["grants", "revoke", &id, "--reason", "done"])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("2 live sessions ended"), "{out}");
    let (at, msg) = tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("revoked session ended")
        .unwrap();
    assert!(
        msg.starts_with("57P01") && msg.contains("revoked by tester"),
        "{msg}"
    );
    eprintln!("session ended {:?} after veilctl revoke started", at - t0);
    assert!(at - t0 < Duration::from_secs(3));
    let (ok, _, err) = long.await.unwrap();
    assert!(!ok && err.contains("revoked"), "{err}");
    assert!(c.is_closed());

    // The other grant of the same identity is untouched.
    let n: i64 = scalar(&other, "SELECT count(*) FROM customers").await;
    assert_eq!(n, 50);
    let e = p.try_connect("alice", "app", &pw).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");

    // Revoking twice, or a grant that does not exist, is a clear error.
    let (ok, _, err) = p.veilctl(&["grants", "revoke", &id]).await;
    assert!(!ok && err.contains("already revoked"), "{err}");
    let (ok, _, err) = p.veilctl(&["grants", "revoke", "g-nope"]).await;
    assert!(!ok && err.contains("no grant with id"), "{err}");

    let all = p.veilctl_json(&["grants", "list", "--all"]).await;
    let revoked = all
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id.as_str())
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "tester");
    let active = p.veilctl_json(&["grants", "list"]).await;
    assert_eq!(active.as_array().unwrap().len(), 1);
    assert_eq!(active[0]["id"], other_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_are_clear() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["--identity", "alice", "--role", "deployer", "--ttl", "3h"],
            "exceeds the maximum of 2h for role \"deployer\"",
        ),
        (
            &["--identity", "alice", "--role", "readonly", "--ttl", "9h"],
            "exceeds the maximum of 8h",
        ),
        (
            &["--identity", "mallory", "--role", "readonly", "--ttl", "1h"],
            "identity \"mallory\" is not defined",
        ),
        (
            &["--identity", "alice", "--role", "root", "--ttl", "1h"],
            "role \"root\" is not defined",
        ),
        (
            &[
                "--identity",
                "ops-agent",
                "--role",
                "deployer",
                "--ttl",
                "1h",
            ],
            "may not hold role \"deployer\" (it may hold: agent)",
        ),
        (
            &["--identity", "alice", "--role", "readonly"],
            "a TTL is required",
        ),
        (
            &["--identity", "alice", "--role", "readonly", "--ttl", "soon"],
            "--ttl \"soon\": not a duration",
        ),
        (
            &["--identity", "alice", "--role", "readonly", "--ttl", "10"],
            "error: --ttl 10: give a unit, like 90s, 15m or 1h",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["grants", "issue"];
        all.extend_from_slice(args);
        let (ok, _, err) = p.veilctl(&all).await;
        assert!(!ok, "{args:?} should be refused");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(
        p.veilctl_json(&["grants", "list", "--all"]).await,
        serde_json::json!([])
    );

    // A service's standing role needs no TTL and does not expire.
    let v = p
        .veilctl_json(&[
            "grants",
            "issue",
            "--identity",
            "billing-svc",
            "--role",
            "billing",
        ])
        .await;
    assert!(v["expires_at"].is_null(), "{v}");
    let c = p
        .connect_with("billing-svc", "app", v["password"].as_str().unwrap())
        .await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM billing.invoices").await;
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_bad_tokens_and_veilctl_says_why() {
    let p = Proxy::start(ProxyOptions::with_grants()).await;
    let admin = p.admin_url.clone().unwrap();
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args(["grants", "list"])
        .env("VEIL_ADMIN_URL", &admin)
        .env("VEIL_ADMIN_TOKEN", "wrong")
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("admin token was rejected"));

    // A closed port: unreachable, said plainly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = tokio::process::Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args(["grants", "list"])
        .env("VEIL_ADMIN_URL", &url)
        .env("VEIL_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.contains("cannot reach the infraveil admin API"),
        "{err}"
    );

    // Raw HTTP: no token, malformed JSON, unknown fields are refused
    // without changing anything.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{admin}/v1/grants"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{admin}/v1/grants"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["error"], "the request body is not valid JSON",
        "{body}"
    );
    // A bad field is named in plain words, without serde's position in a
    // body the user never saw.
    let r = http
        .post(format!("{admin}/v1/grants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"identity": "alice", "role": "readonly", "ttl": "10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("field ttl: invalid duration \"10\""),
        "{error}"
    );
    assert!(
        !error.contains("line 1") && !error.contains("Failed to"),
        "{error}"
    );
    let r = http
        .get(format!("{admin}/v1/grants?all=yes"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["error"], "field all: provided string was not `true` or `false`",
        "{body}"
    );
    assert_eq!(p.running().grants.list(true).len(), 0);

    // An empty or missing token is said to be missing, before any request
    // (the closed port would answer "cannot reach" otherwise), in one line
    // even with RUST_BACKTRACE set.
    let without = |token: Option<&str>, args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_veilctl"));
        cmd.args(args)
            .env("VEIL_ADMIN_URL", &url)
            .env("RUST_BACKTRACE", "1");
        match token {
            Some(t) => cmd.env("VEIL_ADMIN_TOKEN", t),
            None => cmd.env_remove("VEIL_ADMIN_TOKEN"),
        };
        cmd.output()
    };
    for (token, args, want) in [
        (
            Some(""),
            &["grants", "list"][..],
            "the admin token is set but empty",
        ),
        (
            Some("x"),
            &["--token", "", "grants", "list"][..],
            "the admin token is set but empty",
        ),
        (None, &["grants", "list"][..], "the admin token is not set"),
        (
            None,
            &["approvals", "list"][..],
            "the admin token is not set",
        ),
    ] {
        let out = without(token, args).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("error: {want}")),
            "{args:?}: {err}"
        );
        assert!(err.contains("VEIL_ADMIN_TOKEN"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_survive_a_restart_and_a_second_daemon_is_refused() {
    let data = scratch_dir().join("state");
    let opts = || ProxyOptions {
        data_dir: Some(data.clone()),
        ..ProxyOptions::with_grants()
    };
    let p = Proxy::start(opts()).await;
    let (keep, keep_pw) = p.grant("alice", "readonly", "1h").await;
    let (gone, gone_pw) = p.grant("oncall", "readonly", "1h").await;
    let (ok, _, err) = p.veilctl(&["grants", "revoke", &gone]).await;
    assert!(ok, "{err}");

    // Same data directory, second daemon: refused with a clear message.
    let e = infraveil::daemon::start(
        &p.config,
        std::sync::Arc::new(infraveil::policy::inspect::AllowAll),
    )
    .await
    .err()
    .expect("second daemon must not start");
    let msg = e.to_string();
    assert!(msg.contains("in use by another infraveil process"), "{msg}");
    // The first is unharmed.
    p.connect_with("alice", "app", &keep_pw).await;
    p.shutdown().await;

    let p = Proxy::start(opts()).await;
    let c = p.connect_with("alice", "app", &keep_pw).await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM customers").await;
    assert_eq!(n, 50);
    let e = p.try_connect("oncall", "app", &gone_pw).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let all = p.veilctl_json(&["grants", "list", "--all"]).await;
    let status = |id: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .map(|g| g["status"].clone())
    };
    assert_eq!(status(&keep), Some("active".into()));
    assert_eq!(status(&gone), Some("revoked".into()));
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(data.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issue_and_revoke_under_load_lose_nothing() {
    let data = scratch_dir().join("state");
    let opts = || ProxyOptions {
        data_dir: Some(data.clone()),
        ..ProxyOptions::with_grants()
    };
    let p = Proxy::start(opts()).await;
    let admin = p.admin_url.clone().unwrap();

    // Load: sessions querying in a loop while grants churn.
    let (_, load_pw) = p.grant("alice", "readonly", "1h").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = vec![];
    for _ in 0..4 {
        let c = p.connect_with("alice", "app", &load_pw).await;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: i64 = scalar(&c, "SELECT count(*) FROM orders").await;
                n += 1;
            }
            n
        }));
    }

    const WORKERS: usize = 8;
    const EACH: usize = 15;
    let mut workers = vec![];
    for w in 0..WORKERS {
        let admin = admin.clone();
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut out = vec![];
            for i in 0..EACH {
                let r = http
                    .post(format!("{admin}/v1/grants"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&serde_json::json!({
                        "identity": "oncall", "role": "readonly", "ttl": "1h",
                        "reason": format!("worker {w} #{i}"),
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let v: serde_json::Value = r.json().await.unwrap();
                let id = v["id"].as_str().unwrap().to_owned();
                let revoke = i % 2 == 0;
                if revoke {
                    let r = http
                        .post(format!("{admin}/v1/grants/{id}/revoke"))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&serde_json::json!({"by": format!("worker {w}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
                out.push((id, revoke, v["password"].as_str().unwrap().to_owned()));
            }
            out
        }));
    }
    let mut issued = vec![];
    for w in workers {
        issued.extend(w.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        assert!(l.await.unwrap() > 0, "load sessions kept working");
    }
    assert_eq!(issued.len(), WORKERS * EACH);

    let check = |list: serde_json::Value| {
        let list = list.as_array().unwrap().clone();
        assert_eq!(list.len(), WORKERS * EACH + 1, "every grant is listed once");
        for (id, revoked, _) in &issued {
            let g = list.iter().find(|g| g["id"] == id.as_str()).expect(id);
            let want = if *revoked { "revoked" } else { "active" };
            assert_eq!(g["status"], want, "{g}");
        }
    };
    check(p.veilctl_json(&["grants", "list", "--all"]).await);
    p.shutdown().await;

    // And all of it is durable.
    let p = Proxy::start(opts()).await;
    check(p.veilctl_json(&["grants", "list", "--all"]).await);
    let (_, _, pw) = issued.iter().find(|(_, revoked, _)| !revoked).unwrap();
    p.connect_with("oncall", "app", pw).await;
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(data.parent().unwrap());
}

/// Every byte of every file under `dir`.
fn read_all(dir: &std::path::Path) -> Vec<u8> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(read_all(&path));
        } else if let Ok(b) = std::fs::read(&path) {
            out.extend(b);
        }
    }
    out
}
