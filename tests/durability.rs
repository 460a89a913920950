//! Writes inside a transaction block go upstream before their records are
//! durable only when a rollback undoes everything they do (PRODUCT.md,
//! Audit log, Durability). Each test kills a real `infraveil serve` child
//! with SIGKILL inside a block, against a real PostgreSQL, and checks that
//! whatever outlived the rollback has its record: a sequence changed
//! through a Unicode-escaped `setval`, a trigger that commits through
//! `dblink`, a serial column advanced. (Found by an attack on the change
//! that introduced durable-before-commit.)

mod common;

use common::child::Firewall;
use common::*;
use serde_json::Value;

fn recorded<'a>(all: &'a [Value], text: &str) -> Option<&'a Value> {
    all.iter()
        .find(|e| e["type"] == "statement" && e["text"].as_str().is_some_and(|t| t.contains(text)))
}

/// A scalar through psql (the cluster superuser, not through the firewall).
fn pg(db: &str, sql: &str) -> String {
    cluster().psql(db, sql).unwrap().trim().to_owned()
}

const SEQUENCE: &str = "CREATE SEQUENCE s; ALTER SEQUENCE s OWNER TO app_owner;";

/// `setval` with its name written as a Unicode-escaped
/// identifier: the classifier decodes `U&"setva\006C"` to `setval` (class
/// `write`), but the text search for `setval` does not find it, so inside a
/// block it goes upstream before its record is durable. `setval` is not
/// transactional: the sequence keeps the new value when the block rolls
/// back, so after a kill -9 PostgreSQL holds a change no durable record
/// explains. (The plain spelling is durable first; `U&"nextva\006C"` does
/// the same as this.)
#[tokio::test]
async fn a_unicode_escaped_setval_in_a_block_is_durable_before_it_goes_upstream() {
    let db = fresh_db_with("atk2_uesc", SEQUENCE);
    let mut fw = Firewall::start("5s").await;
    let c = fw.connect(&db).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(r#"SELECT U&"setva\006C"('s', 515151)"#)
        .await
        .unwrap();
    assert_eq!(pg(&db, "SELECT last_value FROM s"), "515151");
    fw.kill_9().await;
    drop(c);
    assert_eq!(pg(&db, "SELECT last_value FROM s"), "515151");
    let all = fw.restart_and_export().await;
    assert!(
        recorded(&all, "515151").is_some(),
        "sequence s was set to 515151 (kept after the rollback), but its statement \
         has no record: it went upstream before its record was durable"
    );
}

/// A table with a trigger that writes through `dblink` (the
/// usual way to get an autonomous, always-kept log row in PostgreSQL): an
/// `INSERT` into it is plain `write` — the text mentions neither `dblink`
/// nor anything else — so inside a block it goes upstream before its record
/// is durable, and the trigger's row is COMMITTED at once over the other
/// connection. After a kill -9 the block rolls back, the committed row
/// stays, and the log has no record of the statement that made it.
#[tokio::test]
async fn a_write_whose_trigger_commits_through_dblink_is_durable_before_it_goes_upstream() {
    let c = cluster();
    let db = fresh_db("atk2_dblink");
    let conn = format!(
        "host={} port={} dbname={db} user=postgres",
        c.socket_dir.display(),
        c.port
    );
    c.psql(
        &db,
        &format!(
            r#"
CREATE EXTENSION dblink;
CREATE TABLE kept (v int);
CREATE TABLE orders (v int); ALTER TABLE orders OWNER TO app_owner;
CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = public AS $$
BEGIN
  PERFORM dblink_exec('{conn}', format('INSERT INTO kept VALUES (%s)', NEW.v));
  RETURN NEW;
END $$;
CREATE TRIGGER orders_keep AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION keep();
"#
        ),
    )
    .unwrap();
    let mut fw = Firewall::start("5s").await;
    let client = fw.connect(&db).await;
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO orders VALUES (616161)")
        .await
        .unwrap();
    fw.kill_9().await;
    drop(client);
    assert_eq!(pg(&db, "SELECT count(*) FROM orders"), "0", "rolled back");
    assert_eq!(
        pg(&db, "SELECT v FROM kept"),
        "616161",
        "the trigger's row was committed"
    );
    let all = fw.restart_and_export().await;
    assert!(
        recorded(&all, "616161").is_some(),
        "PostgreSQL committed a row (kept.v = 616161) made by `INSERT INTO orders \
         VALUES (616161)`, but the log has no record of that statement: it went \
         upstream before its record was durable"
    );
}

/// An `INSERT` into a table whose key is `serial` (or
/// identity, or any column default that calls `nextval`) advances the
/// sequence, which a rollback does not undo; nothing in the text says so,
/// so in a block it goes early. After kill -9 the sequence has moved and
/// no record says why. (Stored code run by an early write — a trigger, a
/// rule, a materialized view refreshed — can likewise call `nextval`,
/// `setval` or `dblink_exec`.)
#[tokio::test]
async fn an_insert_that_advances_a_serial_in_a_block_is_durable_before_it_goes_upstream() {
    let db = fresh_db_with(
        "atk2_serial",
        "CREATE TABLE t (id serial PRIMARY KEY, v int); ALTER TABLE t OWNER TO app_owner;",
    );
    let mut fw = Firewall::start("5s").await;
    let c = fw.connect(&db).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t (v) SELECT g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    fw.kill_9().await;
    drop(c);
    assert_eq!(pg(&db, "SELECT count(*) FROM t"), "0", "rolled back");
    assert_eq!(
        pg(&db, "SELECT last_value FROM t_id_seq"),
        "1000",
        "the sequence kept its advance"
    );
    let all = fw.restart_and_export().await;
    assert!(
        recorded(&all, "INSERT INTO t (v)").is_some(),
        "t_id_seq advanced by 1000 (kept after the rollback), but the INSERT that \
         advanced it has no record: it went upstream before its record was durable"
    );
}
