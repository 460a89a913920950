//! What an approver is shown is what the statement does: the blast-radius
//! preview against a real PostgreSQL, for the cases where a row count
//! alone misleads (subqueries beside the input, data-changing WITH,
//! cascading foreign keys, row-level security, triggers, schema names with
//! dots), and statements whose text hides characters.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use infraveil::approvals::ApprovalView;

fn approvals_of(p: &Proxy) -> &Arc<infraveil::approvals::Approvals> {
    p.running().shared.approvals.as_ref().expect("approvals on")
}

async fn pending(p: &Proxy) -> ApprovalView {
    for _ in 0..200 {
        if let Some(r) = approvals_of(p).list(false).into_iter().next() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval request");
}

/// Hold `sql` from alice (role ops, wait mode), return the preview, and
/// cancel the request.
async fn preview_of(db: &str, identity: &str, role: &str, sql: &'static str) -> String {
    let p = approvals_fixture().await;
    let secret = p.issue(identity, role).await;
    let c = p.connect_with(identity, db, &secret).await;
    let run = tokio::spawn(async move { c.batch_execute(sql).await });
    let req = pending(&p).await;
    approvals_of(&p).cancel(&req.id, "test done");
    let _ = run.await;
    p.shutdown().await;
    req.preview.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subquery_beside_the_input_is_not_the_row_estimate() {
    let db = approvals_db("pv_initplan");
    // bot holds writes; the planner's input for the UPDATE is all of t.
    let preview = preview_of(
        &db,
        "bot-a",
        "bot",
        "UPDATE t SET v = (SELECT 'x') WHERE id > 0",
    )
    .await;
    assert!(
        preview.contains("UPDATE on public.t would affect about 100 rows (planner estimate)"),
        "{preview}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_changing_with_shows_the_rows_it_changes() {
    let db = approvals_db("pv_cte");
    let preview = preview_of(&db, "alice", "ops", "WITH d AS (DELETE FROM t) SELECT 1").await;
    assert!(
        preview.contains("DELETE would affect all 100 rows of public.t (exact count)"),
        "{preview}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cascades_triggers_and_row_level_security_are_shown_beside_the_count() {
    let db = approvals_db("pv_effects");
    cluster()
        .psql(
            &db,
            "CREATE TABLE orders (id int PRIMARY KEY, t_id int REFERENCES t ON DELETE CASCADE);
             INSERT INTO orders SELECT g, 1 + g % 100 FROM generate_series(1, 5000) g;
             ALTER TABLE orders OWNER TO app_owner; ANALYZE orders;
             CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN OLD; END$$;
             CREATE TRIGGER t_note BEFORE DELETE ON t FOR EACH ROW EXECUTE FUNCTION note();",
        )
        .unwrap();
    let preview = preview_of(&db, "alice", "ops", "DELETE FROM t").await;
    assert!(
        preview.contains("also changes rows of: orders (ON DELETE CASCADE, about 5000 rows)"),
        "{preview}"
    );
    assert!(preview.contains("triggers run too"), "{preview}");
    assert!(preview.contains("t_note"), "{preview}");

    // Row-level security: what the role may read is not what it may delete.
    let db = approvals_db("pv_rls");
    cluster()
        .psql(
            &db,
            "ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
             CREATE POLICY see_few ON t FOR SELECT USING (id <= 3);
             CREATE POLICY delete_any ON t FOR DELETE USING (true);",
        )
        .unwrap();
    let preview = preview_of(&db, "alice", "ops", "DELETE FROM t").await;
    assert!(
        !preview.contains("all 3 rows of public.t (exact count)"),
        "{preview}"
    );
    assert!(
        preview.contains("DELETE would affect every row of public.t"),
        "{preview}"
    );
    assert!(preview.contains("row-level security is on"), "{preview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_with_a_dot_is_counted_as_itself() {
    let db = fresh_db_with(
        "pv_dots",
        r#"CREATE SCHEMA "a.b"; CREATE SCHEMA a;
           CREATE TABLE "a.b".c (id int); INSERT INTO "a.b".c SELECT generate_series(1, 1000);
           CREATE TABLE a."b.c" (id int); INSERT INTO a."b.c" VALUES (1), (2);
           ALTER SCHEMA "a.b" OWNER TO app_owner; ALTER SCHEMA a OWNER TO app_owner;
           ALTER TABLE "a.b".c OWNER TO app_owner; ALTER TABLE a."b.c" OWNER TO app_owner;"#,
    );
    let preview = preview_of(&db, "alice", "ops", r#"DELETE FROM "a.b".c"#).await;
    assert!(preview.contains("all 1000 rows"), "{preview}");
    assert!(!preview.contains("2 rows"), "{preview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hidden_characters_are_shown_on_the_page_and_in_chat() {
    let db = approvals_db("pv_bidi");
    let mut hook = receiver().await;
    let p = approvals_proxy_with_webhook(&hook.url, "s", Duration::from_secs(60)).await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let sql = "DELETE FROM t /*\u{202e} \u{2066}WHERE id = 1\u{2069} \u{2066}*/";
    let run = tokio::spawn(async move { c.batch_execute(sql).await });
    let msg = hook.next_saying("wants to run").await;
    let text = sections(&msg);
    assert!(
        text.contains("\\u{202e}") && text.contains("invisible"),
        "{text}"
    );
    assert!(!text.contains('\u{202e}'), "{text}");
    let page = reqwest::get(approve_url(&msg))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("\\u{202e}") && page.contains("role=\"alert\""),
        "{page}"
    );
    assert!(!page.contains('\u{202e}'));
    // Long statements full of characters Slack escapes stay within its
    // section limit (Slack refuses longer ones, and then nobody is paged).
    for b in msg["blocks"].as_array().unwrap() {
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000);
            assert_eq!(b["text"]["verbatim"], true, "{b}");
        }
    }
    let id = pending(&p).await.id;
    approvals_of(&p).cancel(&id, "done");
    let _ = run.await;

    let c = p.connect_with("alice", &db, &alice).await;
    let long: &'static str =
        Box::leak(format!("DELETE FROM t /* {} */", "<&>".repeat(3000)).into_boxed_str());
    let run = tokio::spawn(async move { c.batch_execute(long).await });
    let msg = hook.next_saying("wants to run").await;
    for b in msg["blocks"].as_array().unwrap() {
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000, "{} chars", t.chars().count());
        }
    }
    assert!(msg["text"].as_str().unwrap().chars().count() <= 3000);
    let id = pending(&p).await.id;
    approvals_of(&p).cancel(&id, "done");
    let _ = run.await;
    p.shutdown().await;
}
