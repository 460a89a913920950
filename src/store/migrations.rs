//! The control database's schema: one migration per version, applied in
//! order in one transaction under an advisory lock, so daemons starting
//! together take turns and each migration runs once. A daemon older than
//! the schema refuses to start.

use std::time::Duration;

use tokio_postgres::Client;

use super::StoreError;
use super::control::{control_err, describe};

/// `pg_advisory_xact_lock` key the migrations run under ("infraveil").
const MIGRATION_LOCK: i64 = 0x696e_6672_6176_6569;

/// The schema, one migration per version; never edit one that shipped.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE infraveil_docs (
    kind text NOT NULL,
    id text NOT NULL,
    rev bigint NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    doc jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, id)
);
CREATE INDEX infraveil_docs_xid ON infraveil_docs (kind, xid);
CREATE TABLE infraveil_keys (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE infraveil_instances (
    id text PRIMARY KEY,
    public_key text NOT NULL,
    host text,
    pid integer,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE infraveil_audit (
    instance text NOT NULL,
    first_seq bigint NOT NULL,
    chunk bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (instance, first_seq)
);
CREATE FUNCTION infraveil_docs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('infraveil_docs', NEW.kind || ':' || NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER infraveil_docs_notify AFTER INSERT OR UPDATE ON infraveil_docs
    FOR EACH ROW EXECUTE FUNCTION infraveil_docs_notify();
"#,
    ),
    (
        2,
        // Each instance's last stored record, written with every batch: a
        // chain cut shorter is caught by whoever verifies it.
        r#"
ALTER TABLE infraveil_instances ADD COLUMN head_seq bigint, ADD COLUMN head_hash text;
"#,
    ),
];

/// Apply the migrations this database lacks, one daemon at a time.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let work = async {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS infraveil_schema (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
             )",
        )
        .await?;
        let have: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM infraveil_schema",
                &[],
            )
            .await?
            .get(0);
        if have > latest {
            return Ok(Err(have));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > have) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO infraveil_schema (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "control database migrated");
        }
        tx.commit().await?;
        Ok(Ok(()))
    };
    match tokio::time::timeout(Duration::from_secs(30), work).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(have))) => Err(control_err(format!(
            "the control database's schema is version {have}, newer than this infraveil knows ({latest}); upgrade this daemon"
        ))),
        Ok(Err(e)) => Err(control_err(describe(&e))),
        Err(_) => Err(control_err("migrating the control database timed out")),
    }
}
