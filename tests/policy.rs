//! The policy engine in the proxy, against real PostgreSQL: statements that
//! policy does not allow never execute (the table is still there, the row
//! count unchanged) in simple, extended and pipelined form, and every
//! evasion in the classifier's adversarial list is stopped at the wire.
//! `alice` (human, deployer → app_owner) could run every one of these
//! statements upstream, so only the firewall stands in the way.

mod common;

use common::*;

/// A database with `t` (3 rows) that app_owner owns and app_write and
/// app_read may use.
fn setup(name: &str) -> String {
    let db = fresh_db(name);
    cluster()
        .psql(
            &db,
            "SET ROLE app_owner; \
             CREATE TABLE t (id int PRIMARY KEY, note text); \
             INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
             CREATE TABLE keep (id int); \
             CREATE SEQUENCE s; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_write; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_write;",
        )
        .unwrap();
    db
}

fn rows(db: &str) -> String {
    cluster().psql(db, "SELECT count(*) FROM t").unwrap()
}

fn exists(db: &str, table: &str) -> bool {
    cluster()
        .psql(
            db,
            &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
        )
        .unwrap()
        == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_is_held_and_never_runs_in_simple_extended_and_pipelined_form() {
    let db = setup("held_forms");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let c = p.connect("alice", &db).await;

    // Simple protocol.
    for sql in [
        "DROP TABLE t",
        "TRUNCATE t",
        "DELETE FROM t",
        "DELETE FROM t WHERE 1 = 1",
        "UPDATE t SET note = 'x' WHERE true OR id = 1",
        "SELECT 1; DROP TABLE keep",
        "INSERT INTO t VALUES (9, 'z'); DROP TABLE keep",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
        "ALTER TABLE t DROP COLUMN note",
    ] {
        let db_err = refused(&c, sql).await;
        assert!(
            db_err.message().contains("destructive")
                && db_err.message().contains("roles.deployer.approve"),
            "{sql}: {}",
            db_err.message()
        );
        assert!(db_err.detail().is_some(), "{sql}: reason in DETAIL");
    }
    // Extended protocol (tokio-postgres prepares every statement).
    let e = c.execute("DELETE FROM t", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = c
        .query("DELETE FROM t WHERE $1::int = $1::int", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Allowed statements still run, in the same session.
    c.execute("UPDATE t SET note = 'y' WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM t").await, 3);

    // Pipelined: one Sync, a held statement in the middle. PostgreSQL rolls
    // back the implicit transaction, so the INSERT before it does not stick.
    let mut raw = Raw::login(p.port, "alice", &db).await;
    let (_, codes, status) = raw
        .pipeline(&[
            "INSERT INTO t VALUES (10, 'p')",
            "DROP TABLE t",
            "INSERT INTO t VALUES (11, 'q')",
        ])
        .await;
    assert_eq!(codes, vec!["42501".to_string()]);
    assert_eq!(status, b'I');
    let (_, codes, _) = raw.pipeline(&["SELECT 1"]).await;
    assert!(codes.is_empty());

    assert!(exists(&db, "t") && exists(&db, "keep"));
    assert_eq!(
        rows(&db),
        "3",
        "nothing denied ran, nothing around it stuck"
    );
    p.shutdown().await;
}

/// Evasions: each would drop `t` if PostgreSQL saw something the classifier
/// did not. The table must survive all of them, and the harmless look-alikes
/// must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evasions_are_stopped_at_the_wire() {
    let db = setup("evasions");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let c = p.connect("alice", &db).await;
    let attacks = [
        "SELECT 1 -- comment\rDROP TABLE t",
        "SELECT 'a\\'; DROP TABLE t; --'",
        "/* /* nested */ still comment */ DROP TABLE t",
        "SELECT $$ $$; DROP TABLE t; SELECT $$ $$",
        "SELECT $q$ ; $q$; DrOp TaBlE t",
        "SELECT E'\\''; DROP TABLE t; --'",
        "PREPARE p AS DELETE FROM t",
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN (ANALYZE, COSTS OFF) DELETE FROM t",
        "EXPLAIN (ANALYZE true) DELETE FROM t",
        "WITH x AS (SELECT 1) DELETE FROM t",
        "SELECT * FROM (SELECT 1) s; TRUNCATE t",
        "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE t; END $$",
        "CREATE FUNCTION g() RETURNS void LANGUAGE sql AS 'DELETE FROM t'",
        "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, false, '')",
        "DROP TABLE U&\"\\0074\"",
        "COPY t TO PROGRAM 'cat > /dev/null'",
    ];
    for sql in attacks {
        refused(&c, sql).await;
    }
    assert!(exists(&db, "t"));
    assert_eq!(rows(&db), "3");
    // The harmless twins of the attacks run.
    for sql in [
        "SELECT 1 -- comment DROP TABLE t",
        "SELECT 'DROP TABLE t'",
        "/* DROP TABLE t; */ SELECT 1",
        "SELECT $$ DROP TABLE t; $$",
        "EXPLAIN DELETE FROM t",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "SELECT U&\"\\0069d\" FROM t",
    ] {
        c.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(rows(&db), "3");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_and_unknown_are_denied_and_execute_follows_prepare() {
    let db = setup("privileged");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let c = p.connect("deploy-bot", &db).await;
    for sql in [
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "RESET ROLE",
        "SELECT set_config('role', 'postgres', false)",
        "SET search_path = pg_temp, public",
        "ALTER SYSTEM SET work_mem = '1GB'",
        "SELECT pg_terminate_backend(pg_backend_pid())",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT lo_import('/etc/passwd')",
        "COPY t FROM '/etc/passwd'",
        "CREATE EXTENSION IF NOT EXISTS dblink",
        "SELECT my_unknown_function()",
        "this is not sql",
        "EXECUTE never_prepared",
    ] {
        refused(&c, sql).await;
    }
    // The session is still the firewall's upstream user.
    assert_eq!(
        scalar::<String>(&c, "SELECT current_user::text").await,
        "app_owner"
    );
    // ci may write and change the schema; EXECUTE takes the PREPARE's class.
    c.batch_execute("PREPARE ins AS INSERT INTO t VALUES ($1, 'n')")
        .await
        .unwrap();
    c.batch_execute("EXECUTE ins(20)").await.unwrap();
    c.batch_execute("CREATE TABLE made_by_ci (id int)")
        .await
        .unwrap();
    refused(&c, "PREPARE del AS DELETE FROM t").await;
    refused(&c, "EXECUTE del").await;
    assert_eq!(rows(&db), "4");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_writes_are_held_reads_scoped_and_copy_refused() {
    let db = setup("agent");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let c = p.connect("ops-agent", &db).await;
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM t").await, 3);
    for sql in [
        "INSERT INTO t VALUES (30, 'agent')",
        "UPDATE t SET note = 'agent' WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
        "SELECT nextval('s')",
    ] {
        let m = refused(&c, sql).await.message().to_owned();
        assert!(m.starts_with("approval required"), "{m}");
    }
    // Outside the agent role's tables (public.*).
    let e = c
        .batch_execute("SELECT * FROM billing.invoices")
        .await
        .unwrap_err();
    let d = e.as_db_error().unwrap();
    assert!(
        d.message().contains("roles.agent.tables"),
        "{}",
        d.message()
    );
    assert!(d.detail().unwrap_or("").contains("billing.invoices"));
    // COPY FROM STDIN is a write: held before any data is sent.
    let sink = c.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN").await;
    assert!(sink.is_err());
    assert_eq!(rows(&db), "3");

    // psql sees the same error text.
    let (ok, _, err) = psql(
        &p.url("ops-agent", &db),
        &["-c", "DELETE FROM t WHERE id = 2"],
    )
    .await;
    assert!(!ok && err.contains("approval required"), "{err}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_policies_and_a_bad_reload_keeps_the_old() {
    let db = setup("reload");
    let dir = copied_policies("reload");
    let p = Proxy::start(ProxyOptions {
        policies_dir: Some(dir.clone()),
        ..ProxyOptions::enforcing()
    })
    .await;
    let c = p.connect("oncall", &db).await;
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM t").await, 3);

    // Narrow readonly to another schema: the cached decision must not survive.
    let roles = std::fs::read_to_string(dir.join("roles.toml")).unwrap();
    let narrowed = roles.replacen("tables = [\"public.*\"]", "tables = [\"billing.*\"]", 1);
    assert_ne!(roles, narrowed);
    std::fs::write(dir.join("roles.toml"), &narrowed).unwrap();
    p.running().reload_policies().unwrap();
    let e = c.query("SELECT count(*) FROM t", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");

    // A broken file: the reload fails, naming the file, and the last good
    // policies stay in force.
    std::fs::write(dir.join("roles.toml"), narrowed.replace("allow", "alow")).unwrap();
    let err = p.running().reload_policies().unwrap_err().to_string();
    assert!(err.contains("roles.toml") && err.contains("alow"), "{err}");
    let e = c.query("SELECT count(*) FROM t", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    std::fs::write(dir.join("roles.toml"), &roles).unwrap();
    p.running().reload_policies().unwrap();
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM t").await, 3);
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL reads a Query only up to its first zero byte; the firewall
/// refuses such messages rather than judge text PostgreSQL reads otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_inside_a_query_is_refused() {
    let db = setup("zero_byte");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let mut raw = Raw::login(p.port, "alice", &db).await;
    raw.send_frame(b'Q', b"SELECT 1\0DROP TABLE t\0").await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["08P01".to_string()]);
    let (_, codes, _) = raw.pipeline(&["SELECT 1"]).await;
    assert!(codes.is_empty());
    assert!(exists(&db, "t"));
    p.shutdown().await;
}

/// The example policies copied to a directory of their own, to change.
fn copied_policies(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("infraveil-policies-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["roles.toml", "identities.toml"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir
}

/// Logins read the roles from the same copy the inspector judges by, so
/// one reload changes both: a login after it reaches PostgreSQL as the
/// reloaded role's upstream user, and a broken reload keeps the last set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_after_reload_uses_the_reloaded_role() {
    let db = fresh_db("policy_reload");
    let dir = copied_policies("reload_login");
    let p = Proxy::start(ProxyOptions {
        policies_dir: Some(dir.clone()),
        ..ProxyOptions::enforcing()
    })
    .await;
    let before = p.connect("oncall", &db).await;
    assert_eq!(
        scalar::<String>(&before, "SELECT current_user::text").await,
        "app_read"
    );

    // readonly now reaches PostgreSQL as app_write.
    let roles = std::fs::read_to_string(dir.join("roles.toml")).unwrap();
    let changed = roles.replacen(
        "[roles.readonly]\nupstream_user = \"app_read\"",
        "[roles.readonly]\nupstream_user = \"app_write\"",
        1,
    );
    assert_ne!(roles, changed, "the fixture's readonly role moved");
    std::fs::write(dir.join("roles.toml"), &changed).unwrap();
    p.running().reload_policies().unwrap();
    // The policies the firewall reports are the inspector's new ones.
    assert_eq!(
        p.running()
            .shared
            .policies()
            .role("readonly")
            .unwrap()
            .upstream_user,
        "app_write"
    );
    let after = p.connect("oncall", &db).await;
    assert_eq!(
        scalar::<String>(&after, "SELECT current_user::text").await,
        "app_write"
    );

    // A broken reload changes nothing: logins keep the last good set.
    std::fs::write(dir.join("roles.toml"), changed.replace("allow", "alow")).unwrap();
    assert!(p.running().reload_policies().is_err());
    let again = p.connect("oncall", &db).await;
    assert_eq!(
        scalar::<String>(&again, "SELECT current_user::text").await,
        "app_write"
    );
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that narrows a role reaches statements prepared before it:
/// drivers keep them for the whole session, so each Bind after a reload
/// judges the statement again under the policies in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_statements_prepared_before_it() {
    let db = setup("reload_prepared");
    let dir = scratch_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let example = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .join(name),
        )
        .unwrap()
    };
    std::fs::write(dir.join("identities.toml"), example("identities.toml")).unwrap();
    std::fs::write(dir.join("roles.toml"), example("roles.toml")).unwrap();
    let p = Proxy::start(ProxyOptions {
        policies_dir: Some(dir.clone()),
        ..ProxyOptions::enforcing()
    })
    .await;
    let alice = p.connect("alice", &db).await;
    let delete = alice.prepare("DELETE FROM t WHERE id = $1").await.unwrap();
    let read = alice
        .prepare("SELECT note FROM t WHERE id = $1")
        .await
        .unwrap();
    alice.execute(&delete, &[&1i32]).await.unwrap();

    // deployer loses `write`: the prepared DELETE is refused at its next
    // Bind, and stays refused; the prepared read still runs.
    let roles = example("roles.toml").replace(
        "upstream_user = \"app_owner\"\nallow = [\"read\", \"write\", \"ddl\"]",
        "upstream_user = \"app_owner\"\nallow = [\"read\", \"ddl\"]\ndeny = [\"write\"]",
    );
    assert_ne!(roles, example("roles.toml"));
    std::fs::write(dir.join("roles.toml"), roles).unwrap();
    p.running().reload_policies().unwrap();
    for id in [2i32, 3] {
        let e = alice.execute(&delete, &[&id]).await.expect_err("refused");
        assert_eq!(sqlstate(&e), "42501", "{e}");
    }
    assert_eq!(rows(&db), "2");
    let note: String = alice.query_one(&read, &[&2i32]).await.unwrap().get(0);
    assert_eq!(note, "b");
    p.shutdown().await;
}
