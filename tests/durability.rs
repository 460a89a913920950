//! Writes inside a transaction block go upstream before their records are
//! durable only when a rollback undoes everything they do (PRODUCT.md,
//! Audit log, Durability). Each test kills a real `infraveil serve` child
//! with SIGKILL inside a block, against a real PostgreSQL, and checks that
//! whatever outlived the rollback has its record: a sequence changed
//! through a Unicode-escaped `setval`, a trigger that commits through
//! `dblink`, a serial column advanced. (Found by an attack on the change
//! that introduced durable-before-commit.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `infraveil serve` as a child process, so it can be killed with SIGKILL.
struct Firewall {
    child: Option<tokio::process::Child>,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pg_port: u16,
    admin_url: String,
}

impl Firewall {
    /// A firewall with its own data dir in front of the shared cluster;
    /// records nobody waits for are held for `read_window`.
    async fn start(read_window: &str) -> Firewall {
        let dir = scratch_dir();
        let mut passwords = String::new();
        for (role, pw) in &cluster().passwords {
            let f = dir.join(format!("pw-{role}"));
            std::fs::write(&f, pw).unwrap();
            passwords.push_str(&format!("{role} = {{ file = {:?} }}\n", f));
        }
        std::fs::write(dir.join("token"), ADMIN_TOKEN).unwrap();
        std::fs::write(dir.join("secret"), PASSWORD).unwrap();
        let (pg_port, admin_port) = (free_port(), free_port());
        let config = format!(
            r#"
listen = "127.0.0.1:{pg_port}"
data_dir = {data:?}
policies_dir = {policies:?}

[upstream]
host = "127.0.0.1"
port = {upstream}

[upstream.passwords]
{passwords}
[admin]
listen = "127.0.0.1:{admin_port}"
token = {{ file = {token:?} }}

[audit]
read_window = "{read_window}"

[[dev_credentials]]
identity = "alice"
role = "deployer"
secret = {{ file = {secret:?} }}
"#,
            data = dir.join("data"),
            policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            upstream = cluster().port,
            token = dir.join("token"),
            secret = dir.join("secret"),
        );
        let config_path = dir.join("infraveil.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut fw = Firewall {
            child: None,
            log: dir.join("daemon.log"),
            dir,
            config: config_path,
            pg_port,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
        };
        fw.spawn().await;
        fw
    }

    async fn spawn(&mut self) {
        infraveil::proxy::tls::install_default_provider();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_infraveil"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn infraveil serve");
        self.child = Some(child);
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = http.get(format!("{}/healthz", self.admin_url)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "infraveil serve did not come up: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let cfg = format!(
            "host=127.0.0.1 port={} user=alice password={PASSWORD} dbname={db} sslmode=disable",
            self.pg_port
        );
        let (client, conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Pull the plug.
    async fn kill_9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// Start again on the same data dir; the log must verify. Returns every
    /// payload in it.
    async fn restart_and_export(&mut self) -> Vec<Value> {
        self.spawn().await;
        let (ok, out, err) = veilctl(
            Some(&self.admin_url),
            &["--output", "json", "audit", "verify"],
        )
        .await;
        assert!(ok, "verify after the crash: {out}{err}");
        let (ok, out, err) = veilctl(Some(&self.admin_url), &["audit", "export"]).await;
        assert!(ok, "export: {err}");
        payloads(&out)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
