//! The human gate end to end, with real PostgreSQL and a real webhook
//! receiver: approve / deny / timeout in `wait` mode, `defer` mode running
//! once and only for the same statement and identity, the approval page
//! (GET changes nothing; forged, reused and expired links; CSRF; wrong
//! credentials; self-approval and non-approvers), disconnects and cancels
//! while waiting, the extended protocol, and many waiters at once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use infraveil::approvals::{ApprovalView, Status};

const SIGNING_SECRET: &str = "webhook-signing-secret";

/// A proxy with the approvals fixture policies, admin API, no dev
/// credentials, and (optionally) the webhook.
async fn proxy(webhook: Option<&str>, timeout: Duration) -> Proxy {
    match webhook {
        Some(url) => approvals_proxy_with_webhook(url, SIGNING_SECRET, timeout).await,
        None => {
            approvals_proxy(infraveil::config::ApprovalsConfig {
                timeout,
                ..Default::default()
            })
            .await
        }
    }
}

fn db(name: &str) -> String {
    approvals_db(name)
}

fn rows(db: &str) -> i64 {
    cluster()
        .psql(db, "SELECT count(*) FROM t")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn approvals_of(p: &Proxy) -> &Arc<infraveil::approvals::Approvals> {
    p.running().shared.approvals.as_ref().expect("approvals on")
}

/// Wait until `n` requests are pending.
async fn pending(p: &Proxy, n: usize) -> Vec<ApprovalView> {
    for _ in 0..200 {
        let list = approvals_of(p).list(false);
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} pending approval requests");
}

async fn status_of(p: &Proxy, id: &str, want: Status) {
    for _ in 0..100 {
        if approvals_of(p).get(id).map(|r| r.status) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never became {want:?}: {:?}", approvals_of(p).get(id));
}

/// GET a page link; returns (status, body, csrf cookie).
async fn open_page(link: &str) -> (u16, String, Option<String>) {
    let r = reqwest::Client::new().get(link).send().await.unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    (status, r.text().await.unwrap(), cookie)
}

fn hidden(body: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {body}"))
        + key.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// Sign in on the page and decide; returns (status, body).
async fn decide_on_page(link: &str, approver: &str, secret: &str, decision: &str) -> (u16, String) {
    let (status, body, cookie) = open_page(link).await;
    assert_eq!(status, 200, "{body}");
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("t", &hidden(&body, "t"))
        .append_pair("csrf", &hidden(&body, "csrf"))
        .append_pair("approver", approver)
        .append_pair("secret", secret)
        .append_pair("decision", decision)
        .finish();
    let post_url = link.split('?').next().unwrap();
    let r = reqwest::Client::new()
        .post(post_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie.unwrap())
        .body(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_mode_approved_on_the_page_runs_and_returns_the_real_result() {
    let db = db("approve");
    let mut hook = receiver().await;
    let p = proxy(Some(&hook.url), Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;
    let oncall = p.issue("oncall", "readonly").await;

    let c = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c.execute("DELETE FROM t", &[]).await });

    // The webhook message: Slack-shaped, signed, with the preview.
    let (headers, msg) = hook.next().await;
    let text = msg["text"].as_str().unwrap();
    assert!(
        text.contains("alice") && text.contains("destructive"),
        "{text}"
    );
    let section = &sections(&msg);
    assert!(section.contains("DELETE FROM t"), "{section}");
    assert!(
        section.contains("would affect all 100 rows of public.t (exact count)"),
        "{section}"
    );
    let ts = headers["x-infraveil-timestamp"].to_str().unwrap();
    let sig = headers["x-infraveil-signature"].to_str().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let signed = format!("{ts}.{}", serde_json::to_string(&msg).unwrap());
    ring::hmac::verify(
        &key,
        signed.as_bytes(),
        &hex::decode(sig.strip_prefix("v1=").unwrap()).unwrap(),
    )
    .expect("signature over timestamp and body");

    let link = approve_url(&msg);
    let req = pending(&p, 1).await.remove(0);
    assert_eq!(req.statement, "DELETE FROM t");
    assert_eq!(req.mode, infraveil::policy::ApprovalMode::Wait);

    // GET (as an unfurler would, twice) changes nothing.
    for _ in 0..2 {
        let (status, body, _) = open_page(&link).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("DELETE FROM t") && body.contains("pending"),
            "{body}"
        );
    }
    assert_eq!(
        approvals_of(&p).get(&req.id).unwrap().status,
        Status::Pending
    );
    assert!(!run.is_finished(), "the statement waits");
    assert_eq!(rows(&db), 100);

    // A POST without the page's cookie is refused (CSRF); so is a wrong
    // secret, and the requester cannot approve herself.
    let bare = reqwest::Client::new()
        .post(link.split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "t={}&csrf=x&approver=oncall&secret={oncall}&decision=approve",
            link.split("t=").nth(1).unwrap().split('&').next().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    let (status, body) = decide_on_page(&link, "oncall", "wrong-secret", "approve").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = decide_on_page(&link, "alice", &alice, "approve").await;
    assert_eq!(status, 403);
    assert!(body.contains("cannot approve it"), "{body}");
    assert_eq!(
        approvals_of(&p).get(&req.id).unwrap().status,
        Status::Pending
    );

    let (status, body) = decide_on_page(&link, "oncall", &oncall, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("approved by oncall"), "{body}");
    let deleted = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("runs after approval")
        .unwrap()
        .unwrap();
    assert_eq!(deleted, 100, "the real result comes back");
    assert_eq!(rows(&db), 0);
    status_of(&p, &req.id, Status::Executed).await;

    // The link is single-use: the page shows the outcome, a POST is refused.
    let (_, body, _) = open_page(&link).await;
    assert!(body.contains("nothing more can be decided"), "{body}");
    let (status, _) = decide_on_page_raw(&link, "oncall", &oncall).await;
    assert_eq!(status, 409);
}

/// POST a decision without going through a fresh GET's form (a replayed
/// submission): uses a fresh cookie so only the request state can refuse it.
async fn decide_on_page_raw(link: &str, approver: &str, secret: &str) -> (u16, String) {
    let token = link.split("t=").nth(1).unwrap().split('&').next().unwrap();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("t", token)
        .append_pair("csrf", "c")
        .append_pair("approver", approver)
        .append_pair("secret", secret)
        .append_pair("decision", "approve")
        .finish();
    let r = reqwest::Client::new()
        .post(link.split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "veil_csrf=c")
        .body(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_mode_denied_and_timed_out() {
    let db = db("deny");
    let p = proxy(None, Duration::from_secs(2)).await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;

    let c2 = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c2.batch_execute("TRUNCATE t").await });
    let req = pending(&p, 1).await.remove(0);
    assert!(
        req.preview
            .iter()
            .any(|l| l.contains("public.t: 100 rows (exact count)")),
        "{:?}",
        req.preview
    );
    assert!(
        req.preview
            .iter()
            .any(|l| l.contains("referenced by: child") && !l.contains("view tv")),
        "TRUNCATE … CASCADE empties referencing tables (and never views): {:?}",
        req.preview
    );
    // Not an approver of this role.
    let (ok, _, err) = p
        .veilctl(&["approvals", "deny", &req.id, "--as", "bot-a"])
        .await;
    assert!(!ok && err.contains("may not approve"), "{err}");
    let (ok, out, err) = p
        .veilctl(&[
            "approvals",
            "deny",
            &req.id,
            "--as",
            "oncall",
            "--note",
            "not today",
        ])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("denied by oncall"), "{out}");
    let e = run.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let msg = e.as_db_error().unwrap().message().to_owned();
    assert!(msg.contains("denied by oncall"), "{msg}");
    assert_eq!(rows(&db), 100);

    // Nobody decides: after the timeout the client hears so.
    let started = std::time::Instant::now();
    let e = c.batch_execute("DROP TABLE child").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("approval timed out"),
        "{e}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The session is still usable.
    let n: i64 = scalar(&c, "SELECT count(*) FROM t").await;
    assert_eq!(n, 100);
    let list = p.veilctl_json(&["approvals", "list", "--all"]).await;
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"denied") && statuses.contains(&"expired"),
        "{list}"
    );
    for r in list.as_array().unwrap() {
        for key in ["id", "identity", "statement", "class", "status"] {
            assert!(r.get(key).is_some(), "{key} in {r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn defer_mode_runs_once_and_only_for_the_same_statement_and_identity() {
    let db = db("defer");
    let p = proxy(None, Duration::from_secs(60)).await;
    let a = p.issue("bot-a", "bot").await;
    let b = p.issue("bot-b", "bot").await;
    let ca = p.connect_with("bot-a", &db, &a).await;
    let cb = p.connect_with("bot-b", &db, &b).await;
    let stmt = "DELETE FROM t WHERE id = 7";

    // Refused at once, with the id and the link.
    let e = ca.batch_execute(stmt).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let msg = e.as_db_error().unwrap().message().to_owned();
    assert!(
        msg.contains("approval request a-") && msg.contains("/approvals/a-"),
        "{msg}"
    );
    let id = pending(&p, 1).await[0].id.clone();
    assert!(msg.contains(&id));
    // Re-sending before approval does not page again.
    let e = ca.batch_execute(stmt).await.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains(&id));
    assert_eq!(approvals_of(&p).list(false).len(), 1);

    let (ok, _, err) = p
        .veilctl(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    assert!(ok, "{err}");
    // Same statement, other identity (same role): still held.
    let e = cb.batch_execute(stmt).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Other statement, same identity: held.
    let e = ca
        .batch_execute("DELETE FROM t WHERE id = 8")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(rows(&db), 100);
    // The identical statement runs, once.
    ca.batch_execute(stmt).await.unwrap();
    assert_eq!(rows(&db), 99);
    status_of(&p, &id, Status::Executed).await;
    let e = ca.batch_execute(stmt).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "a second run needs a new approval");
    // A new session of the same identity can use an approval too (defer is
    // bound to identity, role and text).
    let id2 = approvals_of(&p)
        .list(false)
        .into_iter()
        .find(|r| r.identity == "bot-a" && r.statement == stmt)
        .unwrap()
        .id;
    p.veilctl(&["approvals", "approve", &id2, "--as", "oncall"])
        .await;
    drop(ca);
    let ca = p.connect_with("bot-a", &db, &a).await;
    let n = ca.execute(stmt, &[]).await.unwrap();
    assert_eq!(n, 0, "row 7 is already gone; the statement ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_cannot_be_forged_and_expire_with_the_request() {
    let db = db("links");
    let mut hook = receiver().await;
    let p = proxy(Some(&hook.url), Duration::from_secs(2)).await;
    let alice = p.issue("alice", "ops").await;
    let oncall = p.issue("oncall", "readonly").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c.batch_execute("DELETE FROM t").await });
    let (_, msg) = hook.next().await;
    let link = approve_url(&msg);

    // Tampered signature, another request's id, no token: all refused, and
    // the page does not say whether the request exists.
    let mut forged = link.clone();
    let at = forged.find("&action").unwrap();
    forged.replace_range(at - 3..at, "AAA");
    let (status, body, _) = open_page(&forged).await;
    assert_eq!(status, 403, "{body}");
    let other = link.replacen("/approvals/a-", "/approvals/a-0", 1);
    assert_eq!(open_page(&other).await.0, 403);
    let bare = link.split('?').next().unwrap().to_owned();
    assert_eq!(open_page(&bare).await.0, 403);

    // Expiry: the waiting client times out and the link stops working.
    let e = run.await.unwrap().unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("timed out"));
    let (status, body) = decide_on_page_raw(&link, "oncall", &oncall).await;
    assert!(status == 409 || status == 410, "{status} {body}");
    assert_eq!(rows(&db), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_that_never_answers_leaves_the_request_decidable() {
    let db = db("hang");
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let p = proxy(Some(&url), Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c.execute("DELETE FROM t WHERE true", &[]).await });
    let id = pending(&p, 1).await[0].id.clone();
    // Two attempts of 0.8 s with a 0.5 s pause, then recorded as failed.
    for _ in 0..100 {
        if approvals_of(&p)
            .get(&id)
            .and_then(|r| r.notification)
            .is_some_and(|n| n.starts_with("failed"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let note = approvals_of(&p).get(&id).unwrap().notification;
    assert!(
        note.as_deref().is_some_and(|n| n.contains("timed out")),
        "{note:?}"
    );
    let (ok, _, err) = p
        .veilctl(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(run.await.unwrap().unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnect_and_cancel_while_waiting() {
    let db = db("gone");
    let p = proxy(None, Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;

    // psql killed while it waits: the request is cancelled.
    let url = format!("postgres://alice:{alice}@127.0.0.1:{}/{db}", p.port);
    let mut child = tokio::process::Command::new("psql")
        .arg(&url)
        .args(["-X", "-c", "DROP TABLE child"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = pending(&p, 1).await[0].id.clone();
    child.kill().await.unwrap();
    status_of(&p, &id, Status::Cancelled).await;

    // A cancel request (Ctrl-C) ends the wait with 57014.
    let c = p.connect_with("alice", &db, &alice).await;
    let token = c.cancel_token();
    let run = tokio::spawn(async move { c.batch_execute("DROP TABLE child").await });
    let id = pending(&p, 1).await[0].id.clone();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = run.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    status_of(&p, &id, Status::Cancelled).await;
    let exists = cluster()
        .psql(&db, "SELECT to_regclass('child') IS NOT NULL")
        .unwrap();
    assert_eq!(exists.trim(), "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_protocol_pipelines_hold_in_order() {
    let db = db("extended");
    let p = proxy(None, Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;
    let mut raw = Raw::login_with(p.port, "alice", &db, &alice).await;

    // Parse/Bind/Execute of the held DELETE, then a SELECT, one Sync.
    raw.send(&parse("", "SELECT 1")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&parse("", "DELETE FROM t")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&parse("", "SELECT count(*) FROM t")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let id = pending(&p, 1).await[0].id.clone();
    p.veilctl(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    let (tags, codes, status) = raw.until_ready().await;
    assert!(codes.is_empty(), "{codes:?}");
    assert_eq!(
        tags,
        b"12DC12C12DCZ".to_vec(),
        "{}",
        String::from_utf8_lossy(&tags)
    );
    assert_eq!(status, b'I');
    assert_eq!(rows(&db), 0);

    // An approval covers one Bind: binding the statement again asks again.
    cluster()
        .psql(
            &db,
            "INSERT INTO t SELECT g, 'y' FROM generate_series(1, 5) g",
        )
        .unwrap();
    raw.send(&parse("", "DELETE FROM t")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let id = pending(&p, 1).await[0].id.clone();
    p.veilctl(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    let again = pending(&p, 1).await[0].id.clone();
    assert_ne!(again, id, "the second Bind is a request of its own");
    p.veilctl(&["approvals", "deny", &again, "--as", "oncall"])
        .await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501".to_owned()]);
    // The denied Bind failed the implicit transaction, so PostgreSQL
    // rolled the DELETE back with it.
    assert_eq!(rows(&db), 5);

    // Denied inside a pipeline: the error, then the rest skipped to Sync.
    raw.send(&parse("", "TRUNCATE t")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let id = pending(&p, 1).await[0].id.clone();
    p.veilctl(&["approvals", "deny", &id, "--as", "oncall"])
        .await;
    let (tags, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501".to_owned()]);
    // Parsing runs nothing and is not held; the Bind is.
    assert_eq!(tags, b"1EZ".to_vec());

    // A named statement (as drivers prepare them) is prepared at once;
    // each Bind of it is held, with its parameter values, and binds once.
    cluster()
        .psql(
            &db,
            "INSERT INTO t SELECT g, 'n' FROM generate_series(101, 103) g",
        )
        .unwrap();
    raw.send(&parse("s1", "DELETE FROM t")).await;
    raw.send(&sync()).await;
    let (tags, codes, _) = raw.until_ready().await;
    assert!(codes.is_empty(), "{codes:?}");
    assert_eq!(tags, b"1Z".to_vec());
    assert!(approvals_of(&p).list(false).is_empty(), "Parse asks nobody");
    raw.send(&bind("s1")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let id = pending(&p, 1).await[0].id.clone();
    p.veilctl(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    let (tags, codes, _) = raw.until_ready().await;
    assert!(codes.is_empty(), "{codes:?}");
    assert_eq!(tags, b"2CZ".to_vec());
    assert_eq!(rows(&db), 0);
    // Executing the same portal again is refused; so is an unapproved Bind.
    raw.send(&bind("s1")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let again = pending(&p, 1).await[0].id.clone();
    assert_ne!(again, id);
    p.veilctl(&["approvals", "deny", &again, "--as", "oncall"])
        .await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["42501".to_owned()], "second Bind of s1");

    // The session still works.
    let (_, codes, _) = raw.pipeline(&["SELECT 1"]).await;
    assert!(codes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_sessions_wait_while_others_keep_working() {
    let db = db("many");
    let p = proxy(None, Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;
    let oncall = p.issue("oncall", "readonly").await;
    const WAITERS: i64 = 8;
    let mut waiting = vec![];
    for i in 1..=WAITERS {
        let c = p.connect_with("alice", &db, &alice).await;
        waiting.push(tokio::spawn(async move {
            c.execute(&format!("DELETE FROM t WHERE {i} = {i}"), &[])
                .await
        }));
    }
    let reqs = pending(&p, WAITERS as usize).await;
    // Meanwhile, other sessions are not held up.
    let reader = p.connect_with("oncall", &db, &oncall).await;
    for _ in 0..50 {
        let n: i64 = scalar(&reader, "SELECT count(*) FROM t").await;
        assert_eq!(n, 100);
    }
    let writer = p.connect_with("alice", &db, &alice).await;
    writer
        .batch_execute("UPDATE t SET v = 'z' WHERE id = 1")
        .await
        .unwrap();
    assert!(waiting.iter().all(|w| !w.is_finished()));
    for r in &reqs {
        let (ok, _, err) = p
            .veilctl(&["approvals", "approve", &r.id, "--as", "oncall"])
            .await;
        assert!(ok, "{err}");
    }
    let mut total = 0;
    for w in waiting {
        total += w.await.unwrap().unwrap();
    }
    assert_eq!(total, 100, "each ran once; together they deleted every row");
}

/// A held statement is shown to approvers, stored and posted redacted, like
/// its audit record; the approval stays bound to the real text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_statements_are_stored_and_sent_redacted() {
    let db = db("redacted");
    let mut hook = receiver().await;
    let p = proxy(Some(&hook.url), Duration::from_secs(2)).await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let sql = "DO $$ BEGIN EXECUTE 'ALTER ROLE app_read PASSWORD ''sekrit-1'''; \
               PERFORM 'host=db password=sekrit-2'; END $$";
    let run = tokio::spawn(async move { c.batch_execute(sql).await });
    let req = pending(&p, 1).await.remove(0);
    assert!(!req.statement.contains("sekrit"), "{}", req.statement);
    assert!(
        req.statement.starts_with("DO $$ BEGIN"),
        "{}",
        req.statement
    );
    let (_, msg) = hook.next().await;
    assert!(!msg.to_string().contains("sekrit"), "{msg}");
    // Nobody decides: it times out and never ran.
    let e = run.await.unwrap().unwrap_err();
    let m = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(m.contains("approval"), "{e:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_messages_escape_slack_control_characters() {
    let db = db("slack_escape");
    let mut hook = receiver().await;
    let p = proxy(Some(&hook.url), Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let sql = "/* <https://evil.example|click to approve> & <!channel> ``` */ DELETE FROM t -- `x`";
    let run = tokio::spawn(async move { c.batch_execute(sql).await });
    let (_, msg) = hook.next().await;
    let section = &sections(&msg);
    // No link, mention or early end of the code block reaches Slack: the
    // control characters arrive escaped and show as themselves.
    assert!(!section.contains("<https://evil"), "{section}");
    assert!(!section.contains("<!channel>"), "{section}");
    assert!(
        section.contains("&lt;https://evil.example|click to approve&gt; &amp; &lt;!channel&gt;"),
        "{section}"
    );
    let block_start = section.find("```").unwrap();
    let block_end = section[block_start + 3..].find("```").unwrap() + block_start + 3;
    let shown = &section[block_start + 3..block_end];
    assert!(
        shown.contains("DELETE FROM t"),
        "the fence closed early: {section}"
    );
    assert!(
        !msg["text"].as_str().unwrap().contains('<'),
        "the notification text is escaped too: {msg}"
    );
    let id = pending(&p, 1).await.remove(0).id;
    approvals_of(&p).cancel(&id, "test over");
    let _ = run.await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_and_cancellation_are_posted_to_chat() {
    let db = db("followups");
    let mut hook = receiver().await;
    let p = proxy(Some(&hook.url), Duration::from_secs(2)).await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    // Nobody decides: the request expires and chat is told.
    let e = c.batch_execute("DELETE FROM t").await.unwrap_err();
    assert!(format!("{e:?}").contains("timed out"), "{e:?}");
    let (_, first) = hook.next().await;
    assert!(
        first["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "actions"),
        "with buttons"
    );
    let expired = hook.next_saying("expired").await;
    assert_eq!(
        expired["blocks"].as_array().unwrap().len(),
        1,
        "a follow-up has no buttons: {expired}"
    );
    assert!(
        expired["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("link is spent"),
        "{expired}"
    );
    // The client cancels: chat is told that too.
    let cancel = c.cancel_token();
    let run = tokio::spawn(async move { c.batch_execute("DELETE FROM t").await });
    hook.next_saying("wants to run").await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let _ = run.await;
    hook.next_saying("cancelled").await;
    assert_eq!(rows(&db), 100);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preview_counts_small_tables_exactly_and_lists_only_outside_dependents() {
    let db = fresh_db_with(
        "preview_counts",
        "CREATE TABLE fresh (id int PRIMARY KEY CHECK (id > 0), v text DEFAULT 'x');
         CREATE INDEX ON fresh (v);
         INSERT INTO fresh SELECT g FROM generate_series(1, 100) g;
         CREATE VIEW fresh_v AS SELECT id FROM fresh;
         CREATE TABLE refs (id int PRIMARY KEY, f int REFERENCES fresh);
         CREATE TABLE one (id int);
         INSERT INTO one VALUES (1);
         ALTER TABLE fresh OWNER TO app_owner; ALTER VIEW fresh_v OWNER TO app_owner;
         ALTER TABLE refs OWNER TO app_owner; ALTER TABLE one OWNER TO app_owner;",
    );
    // Never analysed: reltuples is -1 and the planner would guess from
    // pages (over 1000 rows for these 100).
    assert_eq!(
        cluster()
            .psql(
                &db,
                "SELECT reltuples FROM pg_class WHERE relname = 'fresh'"
            )
            .unwrap()
            .trim(),
        "-1"
    );
    let p = proxy(None, Duration::from_secs(30)).await;
    let alice = p.issue("alice", "ops").await;
    let c = Arc::new(p.connect_with("alice", &db, &alice).await);
    let held = |sql: &'static str| {
        let c = c.clone();
        tokio::spawn(async move { c.batch_execute(sql).await })
    };

    let run = held("DELETE FROM fresh");
    let req = pending(&p, 1).await.remove(0);
    let preview = req.preview.join("\n");
    assert!(
        preview.contains("DELETE would affect all 100 rows of public.fresh (exact count)"),
        "{preview}"
    );
    assert!(
        preview.contains("public.fresh: 100 rows (exact count)"),
        "{preview}"
    );
    approvals_of(&p).cancel(&req.id, "next");
    let _ = run.await;

    let run = held("DROP TABLE fresh CASCADE");
    let req = pending(&p, 1).await.remove(0);
    let preview = req.preview.join("\n");
    assert!(preview.contains("view fresh_v"), "{preview}");
    assert!(
        preview.contains("constraint refs_f_fkey on table refs"),
        "{preview}"
    );
    // Its own CHECK constraint, index, default and key go with it: not listed.
    for own in [
        "fresh_id_check",
        "fresh_v_idx",
        "fresh_pkey",
        "default value",
    ] {
        assert!(!preview.contains(own), "{own} listed in:\n{preview}");
    }
    approvals_of(&p).cancel(&req.id, "next");
    let _ = run.await;

    let run = held("DELETE FROM one");
    let req = pending(&p, 1).await.remove(0);
    let preview = req.preview.join("\n");
    assert!(
        preview.contains("DELETE would affect all 1 row of public.one (exact count)"),
        "{preview}"
    );
    assert!(!preview.contains(" 1 rows"), "{preview}");
    approvals_of(&p).cancel(&req.id, "done");
    let _ = run.await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approver_secrets_sign_in_on_the_page_and_nowhere_else() {
    let db = db("approver_secrets");
    let p = proxy(None, Duration::from_secs(60)).await;
    // Only approvers can be enrolled.
    let (ok, _, err) = p
        .veilctl(&["approvers", "enroll", "--identity", "bot-a"])
        .await;
    assert!(!ok);
    assert!(err.contains("not an approver"), "{err}");
    let e = p
        .veilctl_json(&["approvers", "enroll", "--identity", "oncall"])
        .await;
    let (id, secret) = (
        e["id"].as_str().unwrap().to_owned(),
        e["secret"].as_str().unwrap().to_owned(),
    );
    assert!(secret.starts_with("vap_"), "{e}");
    let list = p.veilctl_json(&["approvers", "list"]).await;
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0].get("secret").is_none() && list[0].get("verifier").is_none());

    // It never opens a PostgreSQL session.
    let e = p.try_connect("oncall", &db, &secret).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");

    // oncall holds no grant at all, and still decides with it.
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c.execute("DELETE FROM t", &[]).await });
    let req = pending(&p, 1).await.remove(0);
    let link = approvals_of(&p).link_for(&req.id).unwrap();
    // Revoked, it signs in no more.
    p.veilctl_json(&["approvers", "revoke", &id]).await;
    let (status, body) = decide_on_page(&link, "oncall", &secret, "approve").await;
    assert_eq!(status, 403, "{body}");
    let e2 = p
        .veilctl_json(&["approvers", "enroll", "--identity", "oncall"])
        .await;
    let fresh = e2["secret"].as_str().unwrap();
    let (status, body) = decide_on_page(&link, "oncall", fresh, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(run.await.unwrap().unwrap(), 100);
    let events: Vec<String> = p
        .audit_payloads(&[])
        .await
        .iter()
        .filter_map(|v| v["type"].as_str().map(str::to_owned))
        .filter(|e| e.starts_with("approver."))
        .collect();
    assert_eq!(
        events,
        ["approver.enrolled", "approver.revoked", "approver.enrolled"]
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follow_ups_tell_an_unused_approval_and_a_rolled_back_one() {
    let db = db("followup_story");
    let mut hook = receiver().await;
    let p = proxy(Some(&hook.url), Duration::from_secs(3)).await;
    // defer (bot): approved, never sent again, expired.
    let bot = p.issue("bot-a", "bot").await;
    let c = p.connect_with("bot-a", &db, &bot).await;
    c.batch_execute("DELETE FROM t WHERE id = 1")
        .await
        .unwrap_err();
    let id = pending(&p, 1).await.remove(0).id;
    p.veilctl_json(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    let m = hook.next_saying("never run").await;
    assert!(
        m["text"].as_str().unwrap().contains("approved by oncall"),
        "{m}"
    );

    // wait (alice): approved and run inside a transaction that rolls back.
    let p2 = proxy(Some(&hook.url), Duration::from_secs(60)).await;
    let alice = p2.issue("alice", "ops").await;
    let c = Arc::new(p2.connect_with("alice", &db, &alice).await);
    c.batch_execute("BEGIN").await.unwrap();
    let run = tokio::spawn({
        let c = c.clone();
        async move { c.execute("DELETE FROM t", &[]).await }
    });
    let id = pending(&p2, 1).await.remove(0).id;
    p2.veilctl_json(&["approvals", "approve", &id, "--as", "oncall"])
        .await;
    assert_eq!(run.await.unwrap().unwrap(), 100);
    hook.next_saying("inside a transaction still open").await;
    c.batch_execute("ROLLBACK").await.unwrap();
    let m = hook.next_saying("its transaction was rolled back").await;
    assert!(m["text"].as_str().unwrap().contains(&id), "{m}");
    assert_eq!(rows(&db), 100);
    assert_eq!(
        approvals_of(&p2).get(&id).unwrap().outcome.as_deref(),
        Some("ran: DELETE 100; its transaction was rolled back")
    );
    p.shutdown().await;
    p2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guessing_an_approvers_secret_on_the_page_is_throttled() {
    let db = db("signin_limit");
    let p = proxy(None, Duration::from_secs(60)).await;
    let oncall = p.issue("oncall", "readonly").await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c.execute("DELETE FROM t", &[]).await });
    let req = pending(&p, 1).await.remove(0);
    let link = approvals_of(&p).link_for(&req.id).unwrap();
    for i in 0..5 {
        let (status, _) = decide_on_page(&link, "oncall", &format!("guess-{i}"), "approve").await;
        assert_eq!(status, 403);
    }
    // Now even the right secret waits: the guesser cannot tell.
    let (status, body) = decide_on_page(&link, "oncall", &oncall, "approve").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Too many wrong secrets"), "{body}");
    assert_eq!(
        approvals_of(&p).get(&req.id).unwrap().status,
        Status::Pending
    );
    approvals_of(&p).cancel(&req.id, "done");
    let _ = run.await;
    p.shutdown().await;
}
