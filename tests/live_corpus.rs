//! The classifier's safety proven on a live database, not by `veilctl
//! check`: every adversarial corpus statement goes through the running
//! firewall as an `agent` and as a `ci` identity, in simple and extended
//! protocol, against a database with sample rows; afterwards the database,
//! read as the superuser, must be exactly as it was (rows, objects, owners,
//! privileges, roles, policies, triggers, settings, prepared transactions)
//! and a bystander session of the same upstream role must still be alive.
//! And psql's `\d` family works through the firewall for a read-only human.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::time::Duration;

use common::*;
use infraveil::classify::Class;

/// Tables and objects the corpus statements name, owned by app_owner, with
/// rows, and usable by the upstream roles the example policies log in as.
fn setup(name: &str) -> String {
    let db = fresh_db(name);
    cluster()
        .psql(
            &db,
            "SET ROLE app_owner; \
             CREATE TABLE customers (id int PRIMARY KEY, email text, name text, banned bool DEFAULT false); \
             INSERT INTO customers SELECT i, 'c' || i || '@x', 'n' || i, i % 5 = 0 FROM generate_series(1, 20) i; \
             CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric CHECK (total >= 0), \
                status text DEFAULT 'open', created_at timestamptz DEFAULT now(), paid_at timestamptz, \
                archived bool DEFAULT false, keep bool DEFAULT false, tenant_id int); \
             INSERT INTO orders (customer_id, total, status) SELECT i % 20 + 1, i, CASE WHEN i % 3 = 0 THEN 'void' ELSE 'open' END FROM generate_series(1, 50) i; \
             CREATE TABLE users (id serial PRIMARY KEY, email text, age int, created_at timestamptz, updated_at timestamptz); \
             INSERT INTO users (email, age) SELECT 'u' || i, i FROM generate_series(1, 10) i; \
             CREATE TABLE t (id int PRIMARY KEY, note text); \
             INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
             CREATE TABLE staging_orders (LIKE orders); \
             CREATE TABLE sessions (id int); INSERT INTO sessions VALUES (1), (2); \
             CREATE VIEW v AS SELECT * FROM orders; \
             CREATE VIEW active_customers AS SELECT * FROM customers WHERE NOT banned; \
             CREATE SCHEMA billing; \
             CREATE TABLE billing.invoices (id int, card text); INSERT INTO billing.invoices VALUES (1, '4111'); \
             CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
             CREATE FUNCTION purge_orders() RETURNS int LANGUAGE sql AS 'DELETE FROM orders RETURNING 1'; \
             GRANT USAGE ON SCHEMA billing TO app_write, app_read; \
             GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO app_write; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read; \
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO app_write;",
        )
        .unwrap();
    db
}

/// Everything a statement could change, read as the superuser, one fact a
/// line: so a difference names what changed.
fn snapshot(db: &str) -> Vec<String> {
    const CATALOG: &str = "
        WITH ns AS (SELECT oid FROM pg_namespace
                    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                      AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%')
        SELECT x FROM (
          SELECT format('rel %s %s owner=%s acl=%s persist=%s rls=%s%s', c.oid::regclass, c.relkind,
                        c.relowner::regrole, c.relacl, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity)
            FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
          UNION ALL SELECT format('col %s.%s %s notnull=%s', a.attrelid::regclass, a.attname,
                                  a.atttypid::regtype, a.attnotnull)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           WHERE c.relnamespace IN (SELECT oid FROM ns) AND a.attnum > 0 AND NOT a.attisdropped
          UNION ALL SELECT format('con %s %s', conrelid::regclass, conname)
            FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns)
          UNION ALL SELECT format('fn %s owner=%s secdef=%s', oid::regprocedure, proowner::regrole, prosecdef)
            FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns)
          UNION ALL SELECT format('op %s', oid::regoperator) FROM pg_operator WHERE oprnamespace IN (SELECT oid FROM ns)
          UNION ALL SELECT format('type %s', oid::regtype) FROM pg_type WHERE typnamespace IN (SELECT oid FROM ns)
          UNION ALL SELECT format('ns %s owner=%s acl=%s', nspname, nspowner::regrole, nspacl) FROM pg_namespace
          UNION ALL SELECT format('role %s super=%s createrole=%s createdb=%s login=%s bypassrls=%s',
                                  rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls)
            FROM pg_roles
          UNION ALL SELECT format('member %s in %s', member::regrole, roleid::regrole) FROM pg_auth_members
          UNION ALL SELECT format('trigger %s %s enabled=%s', tgrelid::regclass, tgname, tgenabled)
            FROM pg_trigger WHERE NOT tgisinternal
          UNION ALL SELECT format('policy %s %s', polrelid::regclass, polname) FROM pg_policy
          UNION ALL SELECT format('rule %s %s', ev_class::regclass, rulename) FROM pg_rewrite
           WHERE rulename <> '_RETURN' AND ev_class >= 16384
          UNION ALL SELECT format('default-acl %s', defaclacl) FROM pg_default_acl
          UNION ALL SELECT format('role-setting %s', setconfig) FROM pg_db_role_setting
          UNION ALL SELECT format('system-setting %s=%s', name, setting) FROM pg_file_settings
           WHERE sourcefile LIKE '%postgresql.auto.conf'
          UNION ALL SELECT format('prepared-xact %s', gid) FROM pg_prepared_xacts
          UNION ALL SELECT format('extension %s', extname) FROM pg_extension
          UNION ALL SELECT format('large-objects %s', count(*)) FROM pg_largeobject_metadata
          UNION ALL SELECT format('sequence %s %s', schemaname || '.' || sequencename, last_value) FROM pg_sequences
          UNION ALL SELECT format('publication %s', pubname) FROM pg_publication
        ) facts(x) ORDER BY x";
    let c = cluster();
    let mut out: Vec<String> = c
        .psql(db, CATALOG)
        .expect("catalog snapshot")
        .lines()
        .map(str::to_owned)
        .collect();
    // Every row of every table, by content.
    let tables = c
        .psql(
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
        .unwrap();
    for t in tables.lines() {
        let rows = c
            .psql(
                db,
                &format!(
                    "SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') FROM {t} r"
                ),
            )
            .unwrap();
        out.push(format!("rows {t} {rows}"));
    }
    out
}

fn differences(before: &[String], after: &[String]) -> Vec<String> {
    let gone = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|l| format!("- {l}"));
    let new = after
        .iter()
        .filter(|l| !before.contains(l))
        .map(|l| format!("+ {l}"));
    gone.chain(new).collect()
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ran,
    Refused,
    /// Any other error: PostgreSQL refused it, or the client did.
    Failed(String),
}

/// Send `sql` through the firewall and say what became of it. A session the
/// statement broke (or a timeout) is replaced by a fresh one.
async fn send(
    p: &Proxy,
    c: &mut tokio_postgres::Client,
    who: &str,
    db: &str,
    sql: &str,
    extended: bool,
) -> Outcome {
    let _ = c.batch_execute("SET statement_timeout = '3s'").await;
    let run = async {
        if extended {
            c.query(sql, &[]).await.map(|_| ())
        } else {
            c.batch_execute(sql).await
        }
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(())) => Outcome::Ran,
        Ok(Err(e)) if sqlstate(&e) == "42501" => Outcome::Refused,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Failed("timed out".into()),
    };
    if c.is_closed() || matches!(&outcome, Outcome::Failed(m) if m == "timed out") {
        *c = p.connect(who, db).await;
    }
    outcome
}

/// The adversarial part of the corpus: the attacks and the differential
/// cases, with the fuzzer's findings.
fn adversarial() -> Vec<(String, usize, Class, String)> {
    corpus::cases()
        .into_iter()
        .filter(|(file, ..)| {
            matches!(
                file.as_str(),
                "adversarial.sql" | "differential.sql" | "fuzz.sql"
            )
        })
        .collect()
}

/// A session of the agent's upstream role that no statement may touch
/// (PostgreSQL itself would let app_write end it).
async fn bystander() -> (tokio_postgres::Client, i32) {
    let c = cluster();
    let pw = &c
        .passwords
        .iter()
        .find(|(r, _)| r == "app_write")
        .expect("app_write password")
        .1;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app_write password={pw} dbname=postgres",
            c.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("bystander connects directly");
    tokio::spawn(conn);
    let pid = scalar::<i32>(&client, "SELECT pg_backend_pid()").await;
    (client, pid)
}

async fn attack_as(who: &str, only_above: Class) {
    let db = setup(&format!("live_{}", who.replace('-', "_")));
    let before = snapshot(&db);
    let (watcher, pid) = bystander().await;
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let mut c = p.connect(who, &db).await;
    let mut wrong = Vec::new();
    let mut counts = [0usize; 3];
    for (file, line, want, sql) in adversarial() {
        if want < only_above {
            continue;
        }
        for extended in [false, true] {
            let got = send(&p, &mut c, who, &db, &sql, extended).await;
            counts[match got {
                Outcome::Ran => 0,
                Outcome::Refused => 1,
                Outcome::Failed(_) => 2,
            }] += 1;
            // Anything above read is more than this identity may run
            // unreviewed: the firewall itself must refuse it.
            if want > Class::Read && got != Outcome::Refused {
                let how = if extended { "extended" } else { "simple" };
                wrong.push(format!(
                    "{file}:{line} ({how}): {got:?} for a {want} statement: {sql:?}"
                ));
            }
        }
    }
    eprintln!(
        "{who}: {} ran, {} refused by the firewall, {} failed otherwise",
        counts[0], counts[1], counts[2]
    );
    p.shutdown().await;
    let after = snapshot(&db);
    let changed = differences(&before, &after);
    assert!(
        changed.is_empty(),
        "{who}: the database changed:\n{}",
        changed.join("\n")
    );
    assert_eq!(
        scalar::<i32>(&watcher, "SELECT pg_backend_pid()").await,
        pid,
        "{who}: the bystander session is alive"
    );
    assert!(wrong.is_empty(), "{who}:\n{}", wrong.join("\n"));
}

/// The agent may only read: every other statement is refused at the wire,
/// and what it may run (the corpus's reads) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_the_adversarial_corpus_and_nothing_changes() {
    attack_as("ops-agent", Class::Read).await;
}

/// CI may read, write and change the schema; nothing destructive,
/// privileged or unknown may reach PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_runs_the_harmful_corpus_and_nothing_changes() {
    attack_as("deploy-bot", Class::Destructive).await;
}

/// psql 15's own catalog queries for its describe commands, replayed by
/// psql itself through the firewall as a human with a read-only role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_commands_work_for_a_read_only_human() {
    let db = setup("live_psql_describe");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let url = p.url("oncall", &db);
    for (cmd, expect) in [
        ("\\d orders", "customer_id"),
        ("\\d+ orders", "customer_id"),
        ("\\d v", "customer_id"),
        ("\\d", "orders"),
        ("\\dt", "orders"),
        ("\\dt+", "orders"),
        ("\\di", "orders_pkey"),
        ("\\dv", "active_customers"),
        ("\\ds", "orders_id_seq"),
        ("\\df", "purge_orders"),
        ("\\df+", "purge_orders"),
        ("\\dn", "billing"),
        ("\\du", "app_owner"),
        ("\\l", &db),
        ("\\dp orders", "orders"),
        ("\\dx", "plpgsql"),
        ("\\dT", ""),
        ("\\dconfig", ""),
    ] {
        let (ok, out, err) = psql(&url, &["-c", cmd]).await;
        assert!(ok && err.is_empty(), "{cmd}: {err}");
        assert!(out.contains(expect), "{cmd}: no {expect:?} in\n{out}");
    }
    p.shutdown().await;
}

/// The oracle is not blind: each kind of change the attacks aim at shows
/// in the snapshot. (Database-local changes only: the other tests here
/// snapshot the cluster-wide catalogs at the same time.)
#[test]
fn the_snapshot_sees_every_kind_of_change() {
    let db = setup("live_snapshot");
    let c = cluster();
    let mut last = snapshot(&db);
    for change in [
        "DELETE FROM orders WHERE id = 1",
        "UPDATE customers SET banned = true WHERE id = 1",
        "SELECT nextval('orders_id_seq')",
        "GRANT SELECT ON orders TO PUBLIC",
        "ALTER TABLE t OWNER TO app_write",
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY p ON t USING (true)",
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 2'",
        "ALTER FUNCTION f() SECURITY DEFINER",
        "ALTER TABLE users ALTER COLUMN age TYPE text",
        "ALTER TABLE sessions SET UNLOGGED",
        "ALTER TABLE staging_orders RENAME TO staged",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
        "DROP VIEW active_customers",
    ] {
        c.psql(&db, change).unwrap();
        let now = snapshot(&db);
        assert!(!differences(&last, &now).is_empty(), "{change} went unseen");
        last = now;
    }
}

/// What text cannot show, the database's own objects can: a user function
/// beside a reviewed built-in's name, a user operator on a built-in symbol,
/// a domain whose CHECK runs a function, attribute notation and a schema
/// named after the upstream login. Each would delete rows of `t` as the
/// agent's upstream role; each is refused, and look-alikes still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_objects_cannot_take_over_reviewed_names() {
    let db = setup("live_user_objects");
    cluster()
        .psql(
            &db,
            "SET ROLE app_owner; \
             CREATE FUNCTION zap(int) RETURNS bool LANGUAGE sql AS 'DELETE FROM t WHERE id = $1; SELECT true'; \
             CREATE FUNCTION public.lower(int) RETURNS text LANGUAGE sql AS 'SELECT zap($1)::text'; \
             CREATE FUNCTION text_eq_int(text, int) RETURNS bool LANGUAGE sql AS 'SELECT zap($2)'; \
             CREATE OPERATOR = (LEFTARG = text, RIGHTARG = int, FUNCTION = text_eq_int); \
             CREATE DOMAIN dom AS int CHECK (zap(VALUE)); \
             CREATE FUNCTION evil_row(t) RETURNS bool LANGUAGE sql AS 'SELECT zap($1.id)'; \
             CREATE FUNCTION text_le_int(text, int) RETURNS bool LANGUAGE sql AS 'SELECT zap($2)'; \
             CREATE OPERATOR <= (LEFTARG = text, RIGHTARG = int, FUNCTION = text_le_int); \
             CREATE VIEW zapping AS SELECT id, zap(id) FROM t; \
             CREATE TABLE guarded (id int); INSERT INTO guarded VALUES (1), (2); \
             ALTER TABLE guarded ENABLE ROW LEVEL SECURITY; ALTER TABLE guarded FORCE ROW LEVEL SECURITY; \
             CREATE POLICY p ON guarded USING (zap(id)); \
             CREATE VIEW zapping2 AS SELECT * FROM zapping; \
             CREATE VIEW killing AS SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'nobody'; \
             CREATE SEQUENCE seq; CREATE VIEW counting AS SELECT nextval('seq'); \
             CREATE TYPE mood AS ENUM ('ok', 'sad'); \
             CREATE FUNCTION mood_eq(mood, mood) RETURNS bool LANGUAGE sql AS 'SELECT zap(1)'; \
             CREATE OPERATOR === (LEFTARG = mood, RIGHTARG = mood, FUNCTION = mood_eq); \
             CREATE FUNCTION mood_text(mood) RETURNS text LANGUAGE sql AS 'SELECT zap(2)::text'; \
             CREATE CAST (mood AS text) WITH FUNCTION mood_text(mood) AS IMPLICIT; \
             CREATE TABLE moods (m mood); INSERT INTO moods VALUES ('ok'); \
             CREATE DOMAIN dom2 AS dom; \
             GRANT SELECT ON zapping, zapping2, killing, counting, guarded, moods TO app_write, app_read; \
             GRANT USAGE ON SEQUENCE seq TO app_write; \
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO app_write, app_read;",
        )
        .unwrap();
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let c = p.connect("ops-agent", &db).await;
    for sql in [
        "SELECT lower(1)",
        "SELECT note FROM t WHERE note = 2",
        "SELECT 3::dom",
        "SELECT CAST(1 AS dom)",
        "SELECT t.evil_row FROM t",
        "SELECT (t).evil_row FROM t",
        "SELECT note FROM t WHERE note BETWEEN 1 AND 3",
        "SELECT CASE note WHEN 1 THEN 'x' END FROM t",
        "SELECT * FROM zapping",
        "SELECT count(*) FROM guarded",
        "SELECT * FROM zapping2",
        "SELECT * FROM killing",
        "SELECT * FROM counting",
        "SELECT length(m) FROM moods",
        "SELECT 'x'::dom2",
        "SELECT '{1}'::_dom",
        "SELECT * FROM t WHERE id IN (SELECT id FROM t)",
    ] {
        refused(&c, sql).await;
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql} (extended): {e}");
    }
    assert_eq!(cluster().psql(&db, "SELECT count(*) FROM t").unwrap(), "3");
    // The same shapes without a user object to answer them run. (Names are
    // checked, not signatures: any `lower(…)` or `=` is refused here.)
    for sql in [
        "SELECT upper(note) FROM t",
        "SELECT note FROM t WHERE note LIKE 'a'",
        "SELECT 3::int",
        "SELECT t.note FROM t",
    ] {
        c.batch_execute(sql).await.expect(sql);
    }

    // A schema named after the upstream login comes first on the path.
    cluster()
        .psql(
            &db,
            "CREATE SCHEMA app_write AUTHORIZATION app_owner; \
             CREATE VIEW app_write.t AS SELECT * FROM billing.invoices; \
             GRANT USAGE ON SCHEMA app_write TO app_write; GRANT SELECT ON app_write.t TO app_write;",
        )
        .unwrap();
    // A reading of the catalog serves new sessions for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = p.connect("ops-agent", &db).await;
    refused(&c, "SELECT * FROM t").await;
    c.batch_execute("SELECT * FROM public.t").await.unwrap();
    p.shutdown().await;
}
