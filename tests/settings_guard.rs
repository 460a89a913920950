//! PostgreSQL must read every statement as the classifier did: with
//! `standard_conforming_strings` on and UTF-8 text. Under
//! `standard_conforming_strings = off`, `SELECT '\''; DROP TABLE victim; --'`
//! is one read to the classifier and a DROP to PostgreSQL. These tests try
//! every way found to switch it off under the firewall: writing
//! `pg_settings` (its rewrite rule calls `set_config`), a database default,
//! and a trigger that calls `set_config` mid-session.

mod common;

use common::*;

const SMUGGLE: &str = r"SELECT '\''; DROP TABLE victim; --'";

fn with_victim(name: &str) -> String {
    fresh_db_with(
        name,
        "CREATE TABLE victim (id int); INSERT INTO victim VALUES (1);
         CREATE TABLE t (id int); ALTER TABLE t OWNER TO app_owner;
         ALTER TABLE victim OWNER TO app_owner;",
    )
}

fn victim_exists(db: &str) -> bool {
    cluster()
        .psql(db, "SELECT to_regclass('public.victim') IS NOT NULL")
        .unwrap()
        .trim()
        == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writing_pg_settings_is_privileged() {
    let db = with_victim("guard_pg_settings");
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    for sql in [
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "UPDATE pg_catalog.pg_settings SET setting = 'public, evil' WHERE name = 'search_path'",
        "WITH x AS (UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings' RETURNING 1) SELECT 1",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(format!("{e:?}").contains("privileged"), "{e:?}");
    }
    // Still on, so the smuggle is the one harmless read it looks like.
    c.batch_execute(SMUGGLE).await.unwrap();
    assert!(victim_exists(&db));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_that_reads_strings_differently_is_refused() {
    let db = with_victim("guard_db_default");
    cluster()
        .psql(
            "postgres",
            &format!("ALTER DATABASE {db} SET standard_conforming_strings = off"),
        )
        .unwrap();
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let e = p.try_connect("alice", &db, &alice).await.unwrap_err();
    let text = format!("{e:?}");
    assert!(text.contains("standard_conforming_strings"), "{text}");
    assert!(victim_exists(&db));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_setting_flipped_mid_session_ends_the_session() {
    let db = with_victim("guard_trigger");
    // A trigger someone else installed: an allowed INSERT switches the
    // setting off as a side effect the classifier cannot see.
    cluster()
        .psql(
            &db,
            "CREATE FUNCTION flip() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN NEW; END $$;
             CREATE TRIGGER t_flip AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION flip();",
        )
        .unwrap();
    let p = approvals_fixture().await;
    let alice = p.issue("alice", "ops").await;
    let c = p.connect_with("alice", &db, &alice).await;
    let e = c
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    let text = format!("{e:?}");
    assert!(
        text.contains("setting changed") && text.contains("standard_conforming_strings"),
        "{text}"
    );
    // The session is over: nothing more reaches PostgreSQL through it.
    assert!(c.batch_execute(SMUGGLE).await.is_err());
    assert!(c.is_closed());
    assert!(victim_exists(&db));
    p.shutdown().await;
}
