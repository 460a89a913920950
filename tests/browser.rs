//! The human gate as an approver meets it: a real webhook message, its
//! link opened in headless Chromium (driven over WebDriver by
//! chromedriver), signing in and deciding on the page, while a real `psql`
//! waits for the answer. Also a forged POST from another origin and from
//! another site, which the browser sends with its own `Origin` and
//! `Sec-Fetch-Site` headers, as an attacker's page would.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the tests
//! say so and pass, unless `INFRAVEIL_REQUIRE_BROWSER=1` (CI sets it).

mod common;
#[path = "common/browser.rs"]
mod headless;

use std::time::Duration;

use common::*;
use fantoccini::Locator;
use headless::{Browser, attacker_page};
use infraveil::approvals::Status;

const SIGNING_SECRET: &str = "browser-webhook-secret";

/// A firewall with the webhook, alice's grant (with a reason), and an
/// approver secret for oncall enrolled through veilctl.
async fn setup() -> (Proxy, Receiver, String, String) {
    let hook = receiver().await;
    let p = approvals_proxy_with_webhook(&hook.url, SIGNING_SECRET, Duration::from_secs(60)).await;
    let (alice, approver_secret) = alice_and_oncall(&p, "INC-4711 clean up").await;
    (p, hook, alice, approver_secret)
}

fn url(p: &Proxy, password: &str, db: &str) -> String {
    format!(
        "postgres://alice:{password}@127.0.0.1:{}/{db}?sslmode=disable",
        p.port
    )
}

fn approvals_of(p: &Proxy) -> &std::sync::Arc<infraveil::approvals::Approvals> {
    p.running().shared.approvals.as_ref().expect("approvals on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approver_approves_and_denies_from_the_chat_link_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = approvals_db("browser_decide");
    let (p, mut hook, alice, approver_secret) = setup().await;

    // psql waits on the held DELETE.
    let u = url(&p, &alice, &db);
    let waiting = tokio::spawn({
        let u = u.clone();
        async move { psql(&u, &["-c", "DELETE FROM t"]).await }
    });
    let msg = hook.next_saying("wants to run").await;
    let link = approve_url(&msg);
    let section = &sections(&msg);
    assert!(section.contains("INC-4711 clean up"), "{section}");
    assert!(section.contains("alice (human)"), "{section}");

    // Opening the link shows what an approver needs before deciding.
    browser.client.goto(&link).await.unwrap();
    let (heading, body) = browser.page().await;
    assert!(heading.starts_with("Approval request a-"), "{heading}");
    for needed in [
        "DELETE FROM t",
        "alice (human)",
        "INC-4711 clean up",
        "100 rows (exact count)",
        "approving runs the statement once, now",
        "Statement SHA-256",
    ] {
        assert!(body.contains(needed), "{needed:?} missing from:\n{body}");
    }
    assert!(body.contains("Expires in "), "relative expiry in:\n{body}");

    // A wrong secret is refused and changes nothing.
    let (heading, body) = browser
        .decide(&link, "oncall", "vap_wrong", "", "approve")
        .await;
    assert_eq!(heading, "Refused", "{body}");
    assert!(!waiting.is_finished());

    let (heading, body) = browser
        .decide(
            &link,
            "oncall",
            &approver_secret,
            "checked with alice",
            "approve",
        )
        .await;
    assert_eq!(heading, "Approved", "{body}");
    assert!(body.contains("approved by oncall"), "{body}");
    let (ok, out, err) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("psql completes after the approval")
        .unwrap();
    assert!(ok, "psql failed: {err}");
    assert!(out.contains("DELETE 100") || err.is_empty(), "{out} {err}");
    assert_eq!(
        cluster()
            .psql(&db, "SELECT count(*) FROM t")
            .unwrap()
            .trim(),
        "0"
    );

    // Chat hears what became of it: decided by whom with the note, then
    // what PostgreSQL answered.
    let decided = hook.next_saying("approved by oncall").await;
    let text = &sections(&decided);
    assert!(text.contains("checked with alice"), "{text}");
    assert!(
        decided["blocks"].as_array().unwrap().len() == 1,
        "a follow-up offers no buttons: {decided}"
    );
    let ran = hook.next_saying("ran: DELETE 100").await;
    assert!(ran["text"].as_str().unwrap().contains("alice"), "{ran}");

    // The link is spent, and the page says so.
    browser.client.goto(&link).await.unwrap();
    let (_, body) = browser.page().await;
    assert!(body.contains("This link is spent"), "{body}");
    assert!(body.contains("ran: DELETE 100"), "{body}");

    // Deny: psql gets the error with the approver's note.
    cluster()
        .psql(
            &db,
            "INSERT INTO t SELECT g, 'y' FROM generate_series(1, 5) g",
        )
        .unwrap();
    let waiting = tokio::spawn({
        let u = u.clone();
        async move { psql(&u, &["-c", "DROP TABLE child"]).await }
    });
    let msg = hook.next_saying("wants to run").await;
    let deny = approve_url(&msg).replace("action=approve", "action=deny");
    let (heading, body) = browser
        .decide(
            &deny,
            "oncall",
            &approver_secret,
            "not during the freeze",
            "deny",
        )
        .await;
    assert_eq!(heading, "Denied", "{body}");
    let (ok, _, err) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("psql ends after the denial")
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("denied by oncall") && err.contains("not during the freeze"),
        "{err}"
    );
    assert!(
        cluster()
            .psql(&db, "SELECT to_regclass('child') IS NOT NULL")
            .unwrap()
            .contains('t')
    );
    hook.next_saying("denied by oncall").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_post_from_another_origin_or_site_is_refused() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = approvals_db("browser_forged");
    let (p, mut hook, alice, approver_secret) = setup().await;
    let c = p.connect_with("alice", &db, &alice).await;
    let run = tokio::spawn(async move { c.execute("DELETE FROM t", &[]).await });
    let msg = hook.next_saying("wants to run").await;
    let link = approve_url(&msg);
    let id = approvals_of(&p).list(false)[0].id.clone();

    // The approver opened the page (the browser holds its CSRF cookie);
    // suppose the form's token leaked too.
    browser.client.goto(&link).await.unwrap();
    let csrf = browser
        .client
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let token = link
        .split("t=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let action = link.split('?').next().unwrap().to_owned();
    let fields = [
        ("t", token),
        ("csrf", csrf),
        ("approver", "oncall".to_owned()),
        ("secret", approver_secret.clone()),
    ];
    // 127.0.0.1 on another port: same site (the cookie goes along),
    // another origin. localhost: another site altogether.
    for host in ["127.0.0.1", "localhost"] {
        let evil = attacker_page(host, &action, &fields).await;
        browser.client.goto(&evil).await.unwrap();
        browser
            .client
            .find(Locator::Css("button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let (heading, body) = browser.answer().await;
        assert_eq!(heading, "Refused", "from {host}: {body}");
        assert!(body.contains("CSRF check failed"), "from {host}: {body}");
        assert_eq!(
            approvals_of(&p).get(&id).unwrap().status,
            Status::Pending,
            "from {host}"
        );
    }
    assert!(!run.is_finished());
    drop(run);
    browser.close().await;
}
