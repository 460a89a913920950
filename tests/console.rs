//! The web console in headless Chromium: an approver signs in, a held
//! `DROP TABLE` from a waiting `psql` appears in the queue without a
//! reload, the approver approves it and `psql` completes; a non-approver
//! neither sees nor can decide a request; a POST without the session's
//! CSRF token is refused; the risk checker classes a destructive
//! statement; the pages fit a 360 px wide phone. Screenshots of each page
//! go to `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (see
//! `tests/common/browser.rs`).

mod common;
#[path = "common/browser.rs"]
mod headless;

use std::time::Duration;

use common::*;
use fantoccini::Locator;
use headless::{Browser, attacker_page};
use infraveil::approvals::Status;

/// The approvals fixture, alice's grant in `ops` and oncall's approver
/// secret.
async fn setup() -> (Proxy, String, String) {
    let p = approvals_fixture().await;
    let (alice, oncall) = alice_and_oncall(&p, "INC-7 tidy up").await;
    (p, alice, oncall)
}

fn console(p: &Proxy, path: &str) -> String {
    format!("{}/console{path}", p.admin_url.as_ref().unwrap())
}

/// Sign in on the console's page; returns the heading of where it led.
async fn sign_in(b: &Browser, p: &Proxy, identity: &str, secret: &str) -> (String, String) {
    b.client.goto(&console(p, "")).await.unwrap();
    let (heading, _) = b.page().await;
    assert_eq!(heading, "Sign in", "the console sends strangers to sign in");
    submit_sign_in(b, identity, secret).await;
    wait_heading_not(b, "Sign in").await
}

/// Fill in and send the sign-in form of the current page.
async fn submit_sign_in(b: &Browser, identity: &str, secret: &str) {
    for (name, text) in [("identity", identity), ("secret", secret)] {
        b.type_into(&format!("input[name={name}]"), text).await;
    }
    b.click("form[action='/console/signin'] button").await;
}

/// The page's heading and text once it is no longer `old` (a form
/// submission has led somewhere).
async fn wait_heading_not(b: &Browser, old: &str) -> (String, String) {
    for _ in 0..100 {
        // The page may be replaced between finding the heading and reading
        // it: a stale element just means "not yet".
        if let Ok(h1) = b.client.find(Locator::Css("h1")).await
            && let Ok(h) = h1.text().await
            && h != old
        {
            return b.page().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still on {old:?}");
}

/// Wait until `css` matches something in the current page (the live
/// queue adds it without a reload).
async fn wait_for(b: &Browser, css: &str) -> fantoccini::elements::Element {
    for _ in 0..300 {
        if let Some(e) = b.client.find_all(Locator::Css(css)).await.unwrap().pop() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never appeared");
}

fn alice_url(p: &Proxy, password: &str, db: &str) -> String {
    format!(
        "postgres://alice:{password}@127.0.0.1:{}/{db}?sslmode=disable",
        p.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approver_approves_a_held_drop_from_the_live_queue() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let db = approvals_db("console_queue");
    let (p, alice, oncall) = setup().await;
    b.resize(1100, 1000).await;

    let (heading, body) = sign_in(&b, &p, "oncall", &oncall).await;
    assert_eq!(heading, "Approvals", "{body}");
    assert!(body.contains("Signed in as oncall"), "{body}");
    assert!(body.contains("No pending requests."), "{body}");

    // psql waits on a held DROP TABLE; the open page shows it unprompted,
    // with its blast radius: the rows and what CASCADE drops too.
    let url = alice_url(&p, &alice, &db);
    let waiting = tokio::spawn(async move { psql(&url, &["-c", "DROP TABLE t CASCADE"]).await });
    let article = wait_for(&b, "article.request").await;
    let text = article.text().await.unwrap();
    for needed in [
        "DROP TABLE t CASCADE",
        "alice (human) as ops",
        "100 rows (exact count)",
        "depended on by:",
        "destructive",
        "rule roles.ops.approve",
        "approving runs the statement once, now",
        "Expires",
        "Blast radius",
    ] {
        assert!(text.contains(needed), "{needed:?} missing from:\n{text}");
    }
    let drop_kw = article
        .find(Locator::Css("pre.sql .kw.danger"))
        .await
        .unwrap();
    assert_eq!(drop_kw.text().await.unwrap(), "DROP");
    b.screenshot("approvals-queue").await;

    // A phone: the queue fits 360 px without sideways scrolling.
    b.resize(360, 800).await;
    let width = b
        .eval("return document.documentElement.scrollWidth")
        .await
        .as_u64()
        .unwrap();
    assert!(width <= 360, "the queue is {width} px wide on a phone");
    b.screenshot("approvals-queue-phone").await;
    b.resize(1100, 1000).await;

    assert!(!waiting.is_finished(), "psql waits for the decision");
    article
        .find(Locator::Css("textarea[name=note]"))
        .await
        .unwrap()
        .send_keys("checked with alice")
        .await
        .unwrap();
    article
        .find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = wait_for(&b, "p.flash").await.text().await.unwrap();
    assert!(flash.contains("approved by oncall"), "{flash}");

    let (ok, out, err) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("psql completes after the approval")
        .unwrap();
    assert!(ok, "psql failed: {err}");
    assert!(out.contains("DROP TABLE"), "{out}");
    assert_eq!(
        cluster()
            .psql(
                &db,
                "SELECT to_regclass('t') IS NULL AND to_regclass('tv') IS NULL"
            )
            .unwrap()
            .trim(),
        "t"
    );

    // The history says who decided, and the audit log has the decision
    // under oncall, from the console.
    let (_, body) = b.page().await;
    assert!(body.contains("checked with alice"), "{body}");
    let decided: Vec<_> = p
        .audit_payloads(&[])
        .await
        .into_iter()
        .filter(|e| e["type"] == "approval.decided")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["by"], "oncall");
    assert_eq!(decided[0]["via"], "console");

    // The risk checker classes a destructive statement as veilctl does.
    b.client.goto(&console(&p, "/check")).await.unwrap();
    b.type_into("textarea[name=sql]", "DROP TABLE t CASCADE")
        .await;
    b.click("select[name=identity] option[value=alice]").await;
    b.click("form[action='/console/check'] button").await;
    let class = wait_for(&b, "#overall-class").await.text().await.unwrap();
    assert_eq!(class, "destructive");
    let decision = b
        .client
        .find(Locator::Css("#decision"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (ok, cli, _) = p
        .veilctl(&[
            "--output",
            "json",
            "check",
            "DROP TABLE t CASCADE",
            "--identity",
            "alice",
            "--policies",
            concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/policies/approvals"),
        ])
        .await;
    assert!(!ok, "a hold is not allowed: exit 1");
    let cli: serde_json::Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli["class"], "destructive");
    assert_eq!(
        cli["decision"].as_str().unwrap(),
        decision,
        "as veilctl check decides"
    );
    b.screenshot("risk-checker").await;
    b.resize(360, 800).await;
    let width = b
        .eval("return document.documentElement.scrollWidth")
        .await
        .as_u64()
        .unwrap();
    assert!(
        width <= 360,
        "the risk checker is {width} px wide on a phone"
    );
    b.screenshot("risk-checker-phone").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_approver_cannot_see_or_decide_and_csrf_is_enforced() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let db = approvals_db("console_refused");
    let (p, alice, oncall) = setup().await;
    // bot-a's DELETE is held (defer) for oncall only: alice approves ops,
    // not bot.
    let (_, bot) = p.grant("bot-a", "bot", "1h").await;
    let c = p.connect_with("bot-a", &db, &bot).await;
    let e = c.execute("DELETE FROM t", &[]).await.unwrap_err();
    let e = e
        .as_db_error()
        .expect("an error from the firewall")
        .message();
    assert!(e.contains("approval"), "{e}");
    let list = p.running().shared.approvals.as_ref().unwrap().list(false);
    assert_eq!(list.len(), 1);
    let id = list[0].id.clone();

    let (heading, body) = sign_in(&b, &p, "alice", &alice).await;
    assert_eq!(heading, "Approvals", "{body}");
    assert!(
        body.contains("No pending requests."),
        "alice sees it:\n{body}"
    );
    assert!(!body.contains(&id), "{body}");

    // A POST of her own session, with her CSRF token, is still refused.
    let forged = format!(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/console/approvals/{id}';
         for (const [k, v] of [['csrf', document.querySelector('form.signout input[name=csrf]').value], ['decision', 'approve']]) {{
           var i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }}
         document.body.appendChild(f); f.submit(); return true;"
    );
    b.eval(&forged).await;
    let (heading, body) = wait_heading_not(&b, "Approvals").await;
    assert_eq!(heading, "Refused", "{body}");
    assert!(body.contains("not an approver of this request"), "{body}");
    let status = |p: &Proxy| {
        p.running()
            .shared
            .approvals
            .as_ref()
            .unwrap()
            .get(&id)
            .unwrap()
            .status
    };
    assert_eq!(status(&p), Status::Pending);

    // oncall sees it; a form without the CSRF token, from the console's
    // own origin or from another page, decides nothing.
    b.client.goto(&console(&p, "/approvals")).await.unwrap();
    b.click("form.signout button").await;
    let (heading, _) = wait_heading_not(&b, "Approvals").await;
    assert_eq!(heading, "Sign in");
    let (heading, body) = sign_in(&b, &p, "oncall", &oncall).await;
    assert_eq!(heading, "Approvals", "{body}");
    assert!(body.contains("DELETE FROM t"), "oncall sees it:\n{body}");
    b.screenshot("approvals-defer").await;
    let without_token = format!(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/console/approvals/{id}';
         var i = document.createElement('input'); i.type = 'hidden'; i.name = 'decision'; i.value = 'approve'; f.appendChild(i);
         document.body.appendChild(f); f.submit(); return true;"
    );
    b.eval(&without_token).await;
    let (heading, body) = wait_heading_not(&b, "Approvals").await;
    assert_eq!(heading, "Refused", "{body}");
    assert!(body.contains("CSRF check failed"), "{body}");
    assert_eq!(status(&p), Status::Pending);

    let action = console(&p, &format!("/approvals/{id}"));
    // 127.0.0.1 on another port: same site, so the `SameSite=Strict`
    // cookie still goes along; no CSRF token.
    let evil = attacker_page("127.0.0.1", &action, &[]).await;
    b.client.goto(&evil).await.unwrap();
    b.click("button").await;
    let (heading, body) = wait_heading_not(&b, "Win a prize").await;
    assert_eq!(heading, "Refused", "{body}");
    assert_eq!(status(&p), Status::Pending);

    // Wrong secrets do not say which half was wrong.
    b.client.goto(&console(&p, "/approvals")).await.unwrap();
    b.click("form.signout button").await;
    let (heading, _) = wait_heading_not(&b, "Approvals").await;
    assert_eq!(heading, "Sign in");
    for (who, secret) in [("oncall", "vap_wrong"), ("nobody", oncall.as_str())] {
        b.client.goto(&console(&p, "/signin")).await.unwrap();
        submit_sign_in(&b, who, secret).await;
        let error = wait_for(&b, "p.error").await.text().await.unwrap();
        assert_eq!(
            error,
            "Sign-in failed: wrong identity or secret, or this identity approves no role."
        );
    }
    b.screenshot("sign-in").await;
    b.close().await;
}

/// Text of the element `css` on the current page.
async fn text_of(b: &Browser, css: &str) -> String {
    wait_for(b, css).await.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_sees_inventory_audit_and_grants() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let db = approvals_db("console_admin");
    let (p, alice, _) = setup().await;
    let (ok, _, err) = psql(
        &alice_url(&p, &alice, &db),
        &["-c", "SELECT count(*) FROM t"],
    )
    .await;
    assert!(ok, "{err}");
    b.resize(1100, 1000).await;

    let (heading, body) = sign_in(&b, &p, "", ADMIN_TOKEN).await;
    assert_eq!(heading, "Approvals", "{body}");
    for link in ["Blast radius", "Audit", "Grants"] {
        assert!(
            body.contains(link),
            "the admin's navigation has {link}:\n{body}"
        );
    }

    // The admin sees every request and decides as one of its approvers
    // (never as the requester), as `veilctl approvals deny --as` does.
    let url = alice_url(&p, &alice, &db);
    let waiting = tokio::spawn(async move { psql(&url, &["-c", "DROP TABLE child"]).await });
    let options = wait_for(&b, "article.request select[name=as]")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(options.trim(), "oncall", "alice may not decide her own");
    b.type_into(
        "article.request textarea[name=note]",
        "not during the freeze",
    )
    .await;
    b.click("article.request button[value=deny]").await;
    let flash = text_of(&b, "p.flash").await;
    assert!(flash.contains("denied by oncall"), "{flash}");
    let (ok, _, err) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("psql ends after the denial")
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("denied by oncall") && err.contains("not during the freeze"),
        "{err}"
    );
    let decided: Vec<_> = p
        .audit_payloads(&[])
        .await
        .into_iter()
        .filter(|e| e["type"] == "approval.decided")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["by"], "oncall");
    assert_eq!(decided[0]["via"], "console (admin)");
    assert_eq!(decided[0]["status"], "denied");

    // Blast radius: the page shows what veilctl prints.
    b.client
        .goto(&console(&p, "/blast-radius?identity=alice"))
        .await
        .unwrap();
    let page = text_of(&b, "#radius-text").await;
    let (_, cli, err) = p.veilctl(&["blast-radius", "--identity", "alice"]).await;
    assert!(!cli.is_empty(), "{err}");
    for line in cli.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            page.contains(line),
            "{line:?} missing from the page:\n{page}"
        );
    }
    assert!(page.contains("role ops"), "{page}");
    b.screenshot("blast-radius").await;

    b.client.goto(&console(&p, "/access")).await.unwrap();
    let review = text_of(&b, "#review-text").await;
    assert!(review.contains("access review"), "{review}");
    assert!(review.contains("alice"), "{review}");
    b.screenshot("access-review").await;

    b.client
        .goto(&console(
            &p,
            "/guard?kind=agent&identity=report-agent&tables=public.t&approvers=oncall",
        ))
        .await
        .unwrap();
    let toml = text_of(&b, "#guard-toml").await;
    assert!(toml.contains("[identities.report-agent]"), "{toml}");
    assert!(toml.contains("public.t"), "{toml}");
    let copy = b
        .client
        .find(Locator::Css("button[data-copy=guard-toml]"))
        .await
        .unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the script shows the copy button"
    );
    b.screenshot("guard-config").await;

    // Audit: alice's read is there, the chain verifies up to it, and the
    // class filter narrows.
    b.client
        .goto(&console(&p, "/audit?identity=alice&class=read"))
        .await
        .unwrap();
    let audit = text_of(&b, "#audit").await;
    assert!(audit.contains("SELECT count(*) FROM t"), "{audit}");
    assert!(audit.contains("verifies"), "{audit}");
    assert!(!audit.contains("does not verify"), "{audit}");
    b.screenshot("audit").await;
    b.client
        .goto(&console(&p, "/audit?identity=alice&class=privileged"))
        .await
        .unwrap();
    let (_, body) = b.page().await;
    assert!(body.contains("No records match."), "{body}");

    // The export streams veilctl's bytes.
    let until = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cookie = b
        .client
        .get_named_cookie("veil_console")
        .await
        .expect("the session cookie");
    let export = reqwest::Client::new()
        .get(console(
            &p,
            &format!("/audit/export?identity=alice&until={until}&format=csv"),
        ))
        .header("cookie", format!("veil_console={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert!(
        export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("audit.csv")
    );
    let bytes = export.text().await.unwrap();
    let (ok, cli, err) = p
        .veilctl(&[
            "audit",
            "export",
            "--identity",
            "alice",
            "--until",
            &until,
            "--format",
            "csv",
        ])
        .await;
    assert!(ok, "{err}");
    assert_eq!(bytes, cli, "the console exports what veilctl does");
    assert!(bytes.contains("SELECT count(*) FROM t"));

    // Grants: issue one (the secret is shown once and works), then revoke.
    b.client.goto(&console(&p, "/grants")).await.unwrap();
    b.click("select[name=identity] option[value=bot-b]").await;
    b.click("select[name=role] option[value=bot]").await;
    b.type_into("input[name=reason]", "CON-1 report").await;
    b.click("form[action='/console/grants'] button").await;
    let secret = text_of(&b, "#grant-secret").await;
    let c = p.connect_with("bot-b", &db, &secret).await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM t").await;
    assert_eq!(n, 100);
    let (_, body) = b.page().await;
    assert!(body.contains("CON-1 report"), "{body}");
    b.screenshot("grants").await;
    b.client.goto(&console(&p, "/grants")).await.unwrap();
    let (_, body) = b.page().await;
    assert!(!body.contains(&secret), "the secret is shown once only");
    let id = p
        .running()
        .grants
        .list(false)
        .into_iter()
        .find(|g| g.identity == "bot-b")
        .unwrap()
        .id;
    b.client
        .find(Locator::Css(&format!(
            "form[action='/console/grants/{id}/revoke'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = text_of(&b, "p.flash").await;
    assert!(flash.contains(&format!("Grant {id} revoked")), "{flash}");
    assert!(p.try_connect("bot-b", &db, &secret).await.is_err());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approver_cannot_open_admin_pages() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let (p, _, oncall) = setup().await;
    sign_in(&b, &p, "oncall", &oncall).await;
    for path in [
        "/grants",
        "/audit",
        "/blast-radius?identity=alice",
        "/audit/export",
    ] {
        b.client.goto(&console(&p, path)).await.unwrap();
        let (heading, _) = b.page().await;
        assert_eq!(heading, "Admins only", "{path}");
    }
    b.close().await;
}
