//! Adversarial review of row-estimate holds (`max_rows`,
//! `max_rows_fraction`) against a real PostgreSQL. Each test asserts the
//! SAFE behaviour: a limited role's statement that changes more rows than
//! its limits allow is refused as `destructive` and changes nothing.
//! Written by an adversarial review; the findings fixed since pass here.
//! Those still open, and the limits inherent to a planner's estimate
//! (documented in the README), are `#[ignore]`d with the reason:
//! `cargo test --test attack_row_limits -- --ignored` shows them.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::*;
use pgwire::messages::extendedquery::{Bind, Parse};

/// `billing` writes freely up to 1000 rows or a quarter of a table; past
/// that, destructive is denied (a denial, not a hold, so a test sees it at
/// once). The role names are the harness's dev credentials' (see below).
const POLICIES: &str = r#"
[roles.billing]
upstream_user = "app_write"
allow = ["read", "write"]
deny = ["destructive"]
tables = ["public.*"]
max_rows = 1000
max_rows_fraction = 0.25

[roles.agent]
upstream_user = "app_write"
allow = ["read", "write"]
deny = ["destructive"]
tables = ["public.*"]
max_rows_fraction = 0.1

[roles.deployer]
upstream_user = "app_write"
allow = ["read", "write", "ddl"]
deny = ["destructive"]
tables = ["public.*"]
max_rows = 1000
max_rows_fraction = 0.25

[roles.readonly]
upstream_user = "app_read"
allow = ["read"]

[identities.oncall]
kind = "human"
roles = ["readonly"]

[identities.alice]
kind = "human"
roles = ["deployer"]

[identities.ops-agent]
kind = "agent"
roles = ["agent"]

[identities.billing-svc]
kind = "service"
standing = "billing"
"#;

/// The dev credentials the harness knows, in the roles above: `CI` is the
/// limited writer, `FRAC` has only `max_rows_fraction 0.1`, `BUILDER` may
/// also run DDL.
const CI: &str = "billing-svc";
const FRAC: &str = "ops-agent";
const BUILDER: &str = "alice";

fn policies() -> PathBuf {
    let dir = scratch_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("limits.toml"), POLICIES).unwrap();
    dir
}

/// `t`: 10k rows, `d` spread over 2026; `small`: 100 rows, same columns;
/// `cust`/`ord`: 100 customers, 5000 orders all of customer 1, cascading; `par`/`kid`: an
/// inheritance parent with its 10k rows in the child. All analysed.
const SCHEMA: &str = "
    CREATE TABLE t (id int PRIMARY KEY, v text, d date);
    INSERT INTO t SELECT g, 'x', date '2026-01-01' + (g % 365) FROM generate_series(1, 10000) g;
    CREATE TABLE small (id int PRIMARY KEY, v text, d date);
    INSERT INTO small SELECT g, 'x', date '2026-01-01' FROM generate_series(1, 100) g;
    CREATE TABLE cust (id int PRIMARY KEY);
    INSERT INTO cust SELECT generate_series(1, 100);
    CREATE TABLE ord (id int PRIMARY KEY, cust_id int REFERENCES cust ON DELETE CASCADE);
    INSERT INTO ord SELECT g, 1 FROM generate_series(1, 5000) g;
    CREATE TABLE par (id int, v text);
    CREATE TABLE kid () INHERITS (par);
    INSERT INTO kid SELECT g, 'x' FROM generate_series(1, 10000) g;
    ANALYZE;
    ALTER TABLE t OWNER TO app_owner;
    ALTER TABLE small OWNER TO app_owner;
    ALTER TABLE cust OWNER TO app_owner;
    ALTER TABLE ord OWNER TO app_owner;
    ALTER TABLE par OWNER TO app_owner;
    ALTER TABLE kid OWNER TO app_owner;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_write;
";

fn db(name: &str) -> String {
    fresh_db_with(name, SCHEMA)
}

fn count(db: &str, sql: &str) -> i64 {
    cluster().psql(db, sql).unwrap().trim().parse().unwrap()
}

async fn start() -> Proxy {
    Proxy::start(ProxyOptions {
        policies_dir: Some(policies()),
        ..ProxyOptions::enforcing()
    })
    .await
}

/// The safe outcome for `sql` (simple protocol): refused (as destructive,
/// or for any other reason the firewall gives), and `measure` (a count)
/// the same afterwards.
async fn must_refuse(c: &tokio_postgres::Client, db: &str, sql: &str, measure: &str) {
    let before = count(db, measure);
    match c.batch_execute(sql).await {
        Ok(()) => {
            let after = count(db, measure);
            panic!(
                "BYPASS: `{sql}` ran within the limits; `{measure}` went from {before} to {after}"
            );
        }
        Err(e) => {
            assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
            let d = e.as_db_error().unwrap();
            eprintln!(
                "refused `{sql}`: {} / {}",
                d.message(),
                d.detail().unwrap_or_default()
            );
            assert_eq!(
                count(db, measure),
                before,
                "{sql}: refused yet changed rows"
            );
        }
    }
}

const ALL_T: &str = "SELECT count(*) FROM t WHERE v = 'x'";

// ---- 1. The planner's estimate is the attacker's to choose ----------------

/// A condition on an expression has no statistics: `lower(v) = 'x'` gets
/// the planner's default equality selectivity (0.5%), about 50 rows of
/// 10000; every row matches. (`id = id + 0` and `id > (SELECT 0)` are
/// caught by the syntax bounds check; this, an ordinary-looking filter, is
/// not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented limit: the limit is the planner's estimate, which a client can shape"]
async fn an_expression_filter_hides_a_whole_table_delete() {
    let db = db("atk_defsel");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "DELETE FROM t WHERE lower(v) = 'x'",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// `= ANY(ARRAY(SELECT …))`: the planner assumes an array of 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented limit: the limit is the planner's estimate, which a client can shape"]
async fn an_array_subquery_hides_a_whole_table_update() {
    let db = db("atk_array");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "UPDATE t SET v = 'gone' WHERE id = ANY(ARRAY(SELECT id FROM t))",
        ALL_T,
    )
    .await;
    p.shutdown().await;
}

// ---- 2. Writes that change existing rows but are never planned ------------

/// `INSERT … ON CONFLICT DO UPDATE` rewrites every existing row; its first
/// keyword is INSERT, so no check is attached. (`… SELECT FROM t ON
/// CONFLICT` is caught by syntax; a generated source is not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_updates_every_row_unplanned() {
    let db = db("atk_upsert");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "INSERT INTO t (id, v) SELECT g, 'gone' FROM generate_series(1, 10000) g \
         ON CONFLICT (id) DO UPDATE SET v = excluded.v",
        ALL_T,
    )
    .await;
    p.shutdown().await;
}

/// The same under `WITH`: planned, but only `Delete`/`Update`/`Merge`
/// nodes are counted, so the plan "changes no existing rows".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_under_with_counts_as_no_rows() {
    let db = db("atk_upsert_with");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "WITH s AS (SELECT id FROM t) INSERT INTO t (id, v) SELECT id, 'gone' FROM s \
         ON CONFLICT (id) DO UPDATE SET v = excluded.v",
        ALL_T,
    )
    .await;
    p.shutdown().await;
}

/// `EXPLAIN ANALYZE` runs the DELETE; its first keyword is EXPLAIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_runs_a_delete_unplanned() {
    let db = db("atk_explain");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "EXPLAIN ANALYZE DELETE FROM t WHERE id > 0",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// A parenthesised top-level query may carry a data-changing WITH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parenthesised_with_delete_is_unplanned() {
    let db = db("atk_paren");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "(WITH d AS (DELETE FROM t WHERE id > 0 RETURNING 1) SELECT count(*) FROM d)",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// `COPY (DELETE … RETURNING) TO STDOUT` deletes; its first keyword is COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_of_a_delete_returning_is_unplanned() {
    let db = db("atk_copy");
    let p = start().await;
    let mut raw = Raw::login(p.port, CI, &db).await;
    let before = count(&db, "SELECT count(*) FROM t");
    let (_, codes, _) = raw
        .pipeline_query("COPY (DELETE FROM t WHERE id > 0 RETURNING id) TO STDOUT")
        .await;
    let after = count(&db, "SELECT count(*) FROM t");
    assert_eq!(
        after,
        before,
        "BYPASS: COPY (DELETE …) deleted {} rows (errors: {codes:?})",
        before - after
    );
    assert_eq!(codes, vec!["42501".to_owned()]);
    p.shutdown().await;
}

// ---- 3. The side connection reads the statement differently -------------

/// `DateStyle` is a harmless setting for the session, but the side
/// connection keeps the server's: `'01/12/2026'` is 12 January there (about
/// 300 rows) and 1 December in the session (over 9000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datestyle_makes_the_side_connection_plan_another_date() {
    let db = db("atk_datestyle");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    c.batch_execute("SET DateStyle = 'ISO, DMY'").await.unwrap();
    must_refuse(
        &c,
        &db,
        "DELETE FROM t WHERE d < '01/12/2026'",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// The same in one string: the SET would run after the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_in_the_same_string_as_the_write_fails_closed() {
    let db = db("atk_datestyle_one");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "SET DateStyle = 'ISO, DMY'; DELETE FROM t WHERE d < '01/12/2026'",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// The same through the extended protocol: a text parameter is read with
/// the side connection's DateStyle too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datestyle_changes_a_bound_text_parameter_too() {
    let db = db("atk_datestyle_ext");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    c.batch_execute("SET DateStyle = 'ISO, DMY'").await.unwrap();
    let before = count(&db, "SELECT count(*) FROM t");
    let r = c
        .execute(
            "DELETE FROM t WHERE d < $1::text::date",
            &[&"01/12/2026".to_owned()],
        )
        .await;
    let after = count(&db, "SELECT count(*) FROM t");
    assert!(
        r.is_err() && after == before,
        "BYPASS (extended): {r:?}, {before} -> {after} rows"
    );
    p.shutdown().await;
}

/// `array_nulls = off` (a harmless setting) makes `'{NULL}'` the string
/// "NULL" in the session; on the side connection it is a NULL, so the
/// planner expects no row to match `v <> ALL(...)`; in the session every
/// row does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: settings PostgreSQL does not report (array_nulls, lc_*, …) are not replayed on the side connection"]
async fn array_nulls_makes_the_side_connection_plan_another_array() {
    let db = db("atk_arraynulls");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    c.batch_execute("SET array_nulls = off").await.unwrap();
    must_refuse(
        &c,
        &db,
        "DELETE FROM t WHERE v <> ALL('{NULL}')",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// Where a schema named after the upstream user exists, the default path
/// (`"$user", public`) finds `app_write.t` first. The session sets the
/// vetted path `public` and means `public.t`; the side connection keeps
/// the default and plans the 10-row `app_write.t`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_public_differs_from_the_side_connections_user_schema() {
    let db = db("atk_userschema");
    cluster()
        .psql(
            &db,
            "CREATE SCHEMA app_write AUTHORIZATION app_write;
             CREATE TABLE app_write.t (id int PRIMARY KEY, v text, d date);
             INSERT INTO app_write.t SELECT g, 'x', date '2026-01-01' FROM generate_series(1, 10) g;
             ALTER TABLE app_write.t OWNER TO app_write;
             ANALYZE app_write.t;",
        )
        .unwrap();
    let p = start().await;
    let c = p.connect(CI, &db).await;
    c.batch_execute("SET search_path = public").await.unwrap();
    must_refuse(
        &c,
        &db,
        "DELETE FROM t WHERE id > 0",
        "SELECT count(*) FROM public.t",
    )
    .await;
    p.shutdown().await;
}

/// The upstream user's search path set for the database (`ALTER ROLE …
/// IN DATABASE … SET search_path`): the side connection logs in with
/// `app, public`, the session sets the vetted `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_public_differs_from_the_side_connections_role_default() {
    let db = db("atk_roledefault");
    cluster()
        .psql(
            &db,
            &format!(
                "CREATE SCHEMA app AUTHORIZATION app_owner;
                 GRANT USAGE ON SCHEMA app TO app_write;
                 CREATE TABLE app.t (id int PRIMARY KEY, v text, d date);
                 INSERT INTO app.t SELECT g, 'x', date '2026-01-01' FROM generate_series(1, 100) g;
                 ALTER TABLE app.t OWNER TO app_owner;
                 GRANT SELECT, DELETE ON app.t TO app_write;
                 ANALYZE app.t;
                 ALTER ROLE app_write IN DATABASE {db} SET search_path = app, public;"
            ),
        )
        .unwrap();
    let p = start().await;
    // Refused at login: the side connection would log in with that path.
    refused_login(&p, &db).await;
    p.shutdown().await;
}

/// The login is refused, naming the search path, and nothing runs.
async fn refused_login(p: &Proxy, db: &str) {
    let Err(e) = p.try_connect(CI, db, PASSWORD).await else {
        panic!("the login is refused");
    };
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let m = e.as_db_error().unwrap().message().to_owned();
    assert!(m.contains("search_path \"app, public\""), "{m}");
}

/// A role that may create objects shadows a small public table with a
/// temporary view of a big one: the session's `small` is `pg_temp.small`
/// (the temporary schema comes first), the side connection's is
/// `public.small`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: the side connection does not see the session's temporary objects (ddl roles only)"]
async fn a_temporary_view_shadows_the_planned_table() {
    let db = db("atk_shadow");
    let p = start().await;
    let c = p.connect(BUILDER, &db).await;
    c.batch_execute("CREATE TEMP VIEW small AS SELECT * FROM public.t")
        .await
        .expect("ddl is allowed to this role");
    // public.small: 10 rows of 100 (within); pg_temp.small: 9910 of t.
    must_refuse(
        &c,
        &db,
        "DELETE FROM small WHERE id > 90",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// A statement whose class is raised past `write` (here `ddl`, which the
/// role allows) is never sized: only `write` statements get a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_inside_create_table_as_is_unplanned() {
    let db = db("atk_ctas");
    let p = start().await;
    let c = p.connect(BUILDER, &db).await;
    must_refuse(
        &c,
        &db,
        "CREATE TEMP TABLE gone AS WITH d AS (DELETE FROM t WHERE id > 0 RETURNING *) SELECT * FROM d",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

// ---- 4. What the plan does not show -------------------------------------

/// One customer row of 100 in the plan; 5000 orders go with it by cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented limit: triggers, rules and cascades are not in a plan"]
async fn an_on_delete_cascade_is_not_in_the_estimate() {
    let db = db("atk_cascade");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "DELETE FROM cust WHERE id = 1",
        "SELECT count(*) FROM ord",
    )
    .await;
    p.shutdown().await;
}

/// Statistics taken before every `v` became `'y'`: the planner expects
/// about one row with `v = 'y'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented limit: estimates come from statistics"]
async fn stale_statistics_undercount() {
    let db = db("atk_stale");
    cluster()
        .psql(&db, "UPDATE t SET v = 'y' WHERE id > 0")
        .unwrap();
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "DELETE FROM t WHERE v = 'y'",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// `max_rows_fraction` is checked per changed node, not per table: two
/// data-changing CTEs of 8% each change 16% of `t` in one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fraction_is_per_node_not_per_table() {
    let db = db("atk_frac");
    let p = start().await;
    let c = p.connect(FRAC, &db).await;
    // Each alone is within 0.1.
    let n = c
        .execute("UPDATE t SET v = 'ok' WHERE id <= 800", &[])
        .await
        .unwrap();
    assert_eq!(n, 800);
    c.batch_execute("UPDATE t SET v = 'x' WHERE id <= 800")
        .await
        .unwrap();
    must_refuse(
        &c,
        &db,
        "WITH a AS (UPDATE t SET v = 'gone' WHERE id <= 800 RETURNING 1), \
              b AS (UPDATE t SET v = 'gone' WHERE id > 800 AND id <= 1600 RETURNING 1) \
         SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)",
        ALL_T,
    )
    .await;
    p.shutdown().await;
}

// ---- 5. Fail closed where it should, and not where it need not ----------

/// A DELETE of one row of an inheritance parent: the parent's own
/// `reltuples` is 0, so any estimate is "100% of the table". Safe (a
/// false hold), but wrong: one row is well within the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_of_an_inheritance_parent_is_within_the_limits() {
    let db = db("atk_inherit");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    let r = c.execute("DELETE FROM par WHERE id = 5", &[]).await;
    let r = r.map_err(|e| {
        let d = e.as_db_error().cloned();
        d.map(|d| format!("{} / {}", d.message(), d.detail().unwrap_or_default()))
            .unwrap_or_else(|| e.to_string())
    });
    assert_eq!(r, Ok(1));
    must_refuse(
        &c,
        &db,
        "DELETE FROM par WHERE id > 0",
        "SELECT count(*) FROM par",
    )
    .await;
    p.shutdown().await;
}

/// SQL `PREPARE`/`EXECUTE`, a multi-statement string and a transaction:
/// each over-limit write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_execute_multi_statement_and_transactions_fail_closed() {
    let db = db("atk_closed");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    let all = "SELECT count(*) FROM t";
    must_refuse(
        &c,
        &db,
        "PREPARE p(int) AS DELETE FROM t WHERE id > $1; EXECUTE p(0)",
        all,
    )
    .await;
    must_refuse(
        &c,
        &db,
        "DELETE FROM t WHERE id = 1; DELETE FROM t WHERE id > 1",
        all,
    )
    .await;
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .batch_execute("DELETE FROM t WHERE id > 0")
        .await
        .expect_err("over the limit in a transaction");
    assert_eq!(sqlstate(&e), "42501");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Partitions: the plan's Append has them all.
    cluster()
        .psql(
            &db,
            "CREATE TABLE pt (id int, v text) PARTITION BY RANGE (id);
             CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (5000);
             CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (5000) TO (20000);
             INSERT INTO pt SELECT g, 'x' FROM generate_series(1, 10000) g;
             ANALYZE pt1; ANALYZE pt2;
             GRANT SELECT, DELETE ON pt, pt1, pt2 TO app_write;",
        )
        .unwrap();
    must_refuse(
        &c,
        &db,
        "DELETE FROM pt WHERE id > 0",
        "SELECT count(*) FROM pt",
    )
    .await;
    assert_eq!(
        c.execute("DELETE FROM pt WHERE id = 7", &[]).await.unwrap(),
        1
    );
    p.shutdown().await;
}

/// Several Binds of one named statement before one Sync, and two unnamed
/// Parse/Bind pairs: each Bind is planned with its own values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_binds_are_each_planned() {
    let db = db("atk_pipeline");
    let p = start().await;
    let mut raw = Raw::login(p.port, CI, &db).await;
    let bind_int = |stmt: &str, v: &str| {
        Bind::new(
            None,
            (!stmt.is_empty()).then(|| stmt.into()),
            vec![0],
            vec![Some(Bytes::copy_from_slice(v.as_bytes()))],
            vec![],
        )
    };
    raw.send(&Parse::new(
        Some("s".into()),
        "DELETE FROM t WHERE id > $1".into(),
        vec![23],
    ))
    .await;
    raw.send(&bind_int("s", "9990")).await;
    raw.send(&execute()).await;
    raw.send(&bind_int("s", "0")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert!(codes.contains(&"42501".to_owned()), "{codes:?}");
    let left = count(&db, "SELECT count(*) FROM t");
    assert!(left >= 9990, "BYPASS: {left} rows left");

    raw.send(&parse("", "DELETE FROM t WHERE id > 9980")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&parse("", "DELETE FROM t WHERE id > 0")).await;
    raw.send(&bind("")).await;
    raw.send(&execute()).await;
    raw.send(&sync()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert!(codes.contains(&"42501".to_owned()), "{codes:?}");
    let left = count(&db, "SELECT count(*) FROM t");
    assert!(left >= 9980, "BYPASS: {left} rows left");
    p.shutdown().await;
}

/// An `INSTEAD OF DELETE` trigger on a view: the plan shows the one row of
/// the view the DELETE names; the trigger (the DBA's, not the attacker's)
/// deletes every row of `t`. Like a cascade, nothing the plan shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented limit: triggers, rules and cascades are not in a plan"]
async fn an_instead_of_trigger_is_not_in_the_estimate() {
    let db = db("atk_trigger");
    cluster()
        .psql(
            &db,
            "CREATE VIEW vt AS SELECT * FROM t;
             CREATE FUNCTION purge() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN DELETE FROM t WHERE t.d >= OLD.d; RETURN OLD; END$$;
             CREATE TRIGGER vt_del INSTEAD OF DELETE ON vt FOR EACH ROW EXECUTE FUNCTION purge();
             ALTER VIEW vt OWNER TO app_owner;
             GRANT SELECT, DELETE ON vt TO app_write;",
        )
        .unwrap();
    let p = start().await;
    let c = p.connect(CI, &db).await;
    must_refuse(
        &c,
        &db,
        "DELETE FROM vt WHERE id = 365",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

// ---- 6. The side connections themselves ---------------------------------

/// Many limited sessions at once: the side connections opened for them are
/// closed again, all but the few kept idle per database and user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_leave_at_most_the_idle_side_connections() {
    let db = db("atk_concurrent");
    let p = start().await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(p.connect(CI, &db).await);
    }
    let mut runs = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let sql = format!("DELETE FROM t WHERE id = {}", i + 1);
        runs.push(async move { c.execute(sql.as_str(), &[]).await });
    }
    for r in futures_util::future::join_all(runs).await {
        assert_eq!(r.unwrap(), 1);
    }
    drop(clients);
    let side = "SELECT count(*) FROM pg_stat_activity \
                WHERE application_name = 'infraveil-estimate' AND datname = current_database()";
    let mut n = count(&db, side);
    for _ in 0..50 {
        if n <= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        n = count(&db, side);
    }
    assert!(n <= 4, "{n} side connections still open");
    p.shutdown().await;
}

/// Idle side connections are kept with no expiry: once every client of a
/// database has gone, the firewall still holds backends in it, and the
/// database cannot be dropped (or renamed) until the firewall restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_connections_do_not_pin_a_database_after_its_clients_leave() {
    let db = db("atk_pinned");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    assert_eq!(
        c.execute("DELETE FROM t WHERE id = 1", &[]).await.unwrap(),
        1
    );
    drop(c);
    let mut dropped = Err(String::from("not tried"));
    for _ in 0..3 {
        dropped = cluster()
            .psql("postgres", &format!("DROP DATABASE {db}"))
            .map_err(|e| e.to_string());
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        dropped.is_ok(),
        "the firewall's idle side connections pin the database: {dropped:?}"
    );
    p.shutdown().await;
}

/// A transaction that holds its own table's lock (here `LOCK … IN SHARE
/// MODE`, which `app_write` may take; DDL on the table would do the same):
/// the side connection cannot plan past the session's own lock, so even a
/// one-row DELETE by key is refused, after a second's wait each time.
/// Safe, but every limited write in such a transaction fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented: a lock the session holds makes the plan time out, which counts as over (fails closed)"]
async fn a_write_in_a_transaction_holding_the_tables_lock_can_be_sized() {
    let db = db("atk_ownlock");
    let p = start().await;
    let c = p.connect(CI, &db).await;
    c.batch_execute("BEGIN; LOCK TABLE t IN SHARE MODE")
        .await
        .expect("LOCK is allowed to this role");
    let r = c.execute("DELETE FROM t WHERE id = 1", &[]).await;
    let r = r.map_err(|e| {
        let d = e.as_db_error().cloned();
        d.map(|d| format!("{} / {}", d.message(), d.detail().unwrap_or_default()))
            .unwrap_or_else(|| e.to_string())
    });
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(r, Ok(1));
    p.shutdown().await;
}

/// A role that may run DDL puts a rule on its own temporary table: each
/// INSERT into it also deletes from `t`. The INSERT is never planned (and
/// the side connection could not see the temporary table if it were).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_temporary_table_deletes_unplanned() {
    let db = db("atk_rule");
    let p = start().await;
    let c = p.connect(BUILDER, &db).await;
    c.batch_execute("CREATE TEMP TABLE tt (x int)")
        .await
        .expect("ddl is allowed to this role");
    let rule = c
        .batch_execute(
            "CREATE RULE purge AS ON INSERT TO tt DO ALSO DELETE FROM public.t WHERE id > 0",
        )
        .await;
    if let Err(e) = rule {
        // The firewall refused the rule itself: safe.
        assert_eq!(sqlstate(&e), "42501", "{e}");
        p.shutdown().await;
        return;
    }
    must_refuse(
        &c,
        &db,
        "INSERT INTO tt VALUES (1)",
        "SELECT count(*) FROM t",
    )
    .await;
    p.shutdown().await;
}

/// Not a row limit, found on the way: with the upstream user's search path
/// set for the database to `app, public`, an unqualified `t` is `app.t`,
/// outside the role's `tables = ["public.*"]`; the firewall reads it as
/// `public.t`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_default_search_path_leaves_the_table_scope() {
    let db = db("atk_scope");
    cluster()
        .psql(
            &db,
            &format!(
                "CREATE SCHEMA app AUTHORIZATION app_owner;
                 GRANT USAGE ON SCHEMA app TO app_write;
                 CREATE TABLE app.t (id int PRIMARY KEY, v text, d date);
                 INSERT INTO app.t SELECT g, 'x', date '2026-01-01' FROM generate_series(1, 100) g;
                 ALTER TABLE app.t OWNER TO app_owner;
                 GRANT SELECT, DELETE ON app.t TO app_write;
                 ANALYZE app.t;
                 ALTER ROLE app_write IN DATABASE {db} SET search_path = app, public;"
            ),
        )
        .unwrap();
    let p = start().await;
    refused_login(&p, &db).await;
    p.shutdown().await;
}

/// A statement prepared before a reload that gives the role row limits
/// keeps running unchecked: its check (or its lack of one) was fixed when
/// it was parsed, and drivers keep prepared statements for the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_added_by_a_reload_apply_to_statements_prepared_before_it() {
    let db = db("atk_reload");
    let dir = scratch_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let unlimited = POLICIES.replacen("max_rows = 1000\nmax_rows_fraction = 0.25\n", "", 1);
    assert_ne!(unlimited, POLICIES);
    std::fs::write(dir.join("limits.toml"), &unlimited).unwrap();
    let p = Proxy::start(ProxyOptions {
        policies_dir: Some(dir.clone()),
        ..ProxyOptions::enforcing()
    })
    .await;
    let c = p.connect(CI, &db).await;
    let delete = c.prepare("DELETE FROM t WHERE id > $1").await.unwrap();
    std::fs::write(dir.join("limits.toml"), POLICIES).unwrap();
    p.running().reload_policies().unwrap();
    // A new statement is checked ...
    let e = c
        .execute("DELETE FROM t WHERE id > $1", &[&0i32])
        .await
        .expect_err("over the new limit");
    assert_eq!(sqlstate(&e), "42501");
    // ... and so must the one prepared before.
    let before = count(&db, "SELECT count(*) FROM t");
    let r = c.execute(&delete, &[&0i32]).await;
    let after = count(&db, "SELECT count(*) FROM t");
    assert!(
        r.is_err() && after == before,
        "BYPASS: the statement prepared before the reload ran: {r:?}, {before} -> {after} rows"
    );
    p.shutdown().await;
}
