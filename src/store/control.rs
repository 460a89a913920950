//! The PostgreSQL control database several firewalls share: the schema
//! (versioned migrations, applied under an advisory lock so daemons starting
//! together take turns), documents with a revision for conditional updates,
//! keys, each instance's audit chain, and the connection that holds this
//! instance's name and hears what the others change (LISTEN/NOTIFY).
//!
//! Every write is one autocommitted statement, so it is durable when it
//! returns (with the server's `synchronous_commit`). Every operation has a
//! deadline: a control database that stops answering is an error the
//! callers fail closed on, never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Change, StoreError};
use crate::config::{StateConfig, UpstreamConfig, UpstreamTlsMode};

/// The channel every document write is announced on (`table:id`).
const CHANNEL: &str = "infraveil_docs";
/// The session advisory lock that holds an instance's name: 64 bits of
/// SHA-256 of the name, so two names do not share a lock.
fn instance_lock(name: &str) -> i64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("infraveil-instance\0{name}").as_bytes());
    i64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]))
}
/// How long one operation may take before it counts as a failure.
const DEADLINE: Duration = Duration::from_secs(5);
/// A catch-up read this often, for notifications lost with a connection.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Audit chunks read per round trip.
pub(super) const PAGE: i64 = 64;

type Conn = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// The control database, as one instance uses it.
pub(super) struct Control {
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// Documents, keys and reads.
    shared: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// The audit writer's own, so an export never delays a record.
    writer: tokio::sync::Mutex<Option<Arc<Client>>>,
    instance: String,
    /// This instance's name is held (and notifications are heard): audit
    /// records may be written under it.
    locked: AtomicBool,
    handle: tokio::runtime::Handle,
}

pub(super) fn control_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Control(e.to_string())
}

impl Control {
    /// Connect, migrate, take this instance's name and start hearing
    /// changes. Fails if another live daemon holds the name.
    pub(super) async fn open(
        config: &StateConfig,
        changes: broadcast::Sender<Change>,
    ) -> Result<Arc<Control>, StoreError> {
        let url = config
            .url
            .as_ref()
            .ok_or_else(|| control_err("state.url is not set"))?
            .read("state.url")
            .map_err(control_err)?;
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| control_err(format!("state.url is not a PostgreSQL URL: {e}")))?;
        pg.application_name("infraveil")
            .connect_timeout(DEADLINE)
            .keepalives_idle(Duration::from_secs(10));
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "localhost".to_owned(),
        };
        // `[state] tls`, or the URL's `sslmode` (libpq's `prefer` when it
        // names none); the two may not disagree.
        let in_url = url.contains("sslmode=").then(|| pg.get_ssl_mode());
        use tokio_postgres::config::SslMode;
        let mode = match (config.tls, in_url) {
            (Some(t), None) => t,
            (Some(t), Some(m)) => {
                let agree = matches!(
                    (t, m),
                    (UpstreamTlsMode::Disable, SslMode::Disable)
                        | (
                            UpstreamTlsMode::Require | UpstreamTlsMode::VerifyFull,
                            SslMode::Require
                        )
                );
                if !agree {
                    return Err(control_err(
                        "state.tls and the sslmode in state.url disagree; set one",
                    ));
                }
                t
            }
            (None, Some(SslMode::Disable)) => UpstreamTlsMode::Disable,
            (None, _) => UpstreamTlsMode::Require,
        };
        let prefer =
            config.tls.is_none() && !matches!(in_url, Some(SslMode::Require | SslMode::Disable));
        let up = UpstreamConfig {
            host,
            port: 5432,
            tls: if mode == UpstreamTlsMode::Disable {
                UpstreamTlsMode::Require
            } else {
                mode
            },
            ca_file: config.ca_file.clone(),
            server_name: None,
            connect_timeout: DEADLINE,
            passwords: Default::default(),
        };
        let rustls = crate::net::tls::upstream_config(&up)
            .map_err(|e| control_err(format!("TLS: {e}")))?
            .ok_or_else(|| control_err("TLS configuration missing"))?;
        pg.ssl_mode(match mode {
            UpstreamTlsMode::Disable => SslMode::Disable,
            // Encrypted if the server offers it, as libpq does by default.
            _ if prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let control = Arc::new(Control {
            pg,
            tls: MakeRustlsConnect::new((*rustls).clone()),
            shared: Default::default(),
            writer: Default::default(),
            instance: config.instance_name(),
            locked: AtomicBool::new(false),
            handle: tokio::runtime::Handle::current(),
        });
        let (mut client, conn) = control.connect().await?;
        let driver = tokio::spawn(drive(conn, None));
        super::migrations::migrate(&mut client).await?;
        drop(client);
        let _ = driver.await;
        // The name is held by the listening connection: if this daemon
        // dies, PostgreSQL drops the lock with its connection.
        let (client, conn) = control.connect().await?;
        let listening = control.listen(client, conn, &changes).await?;
        if !listening.locked {
            return Err(StoreError::InstanceInUse {
                instance: control.instance.clone(),
            });
        }
        tokio::spawn(control.clone().keep_listening(listening, changes));
        Ok(control)
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    pub(super) fn available(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    async fn connect(&self) -> Result<(Client, Conn), StoreError> {
        match tokio::time::timeout(DEADLINE, self.pg.connect(self.tls.clone())).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(control_err(describe(&e))),
            Err(_) => Err(control_err("connecting timed out")),
        }
    }

    /// The shared (or the writer's) client, connecting if needed.
    async fn client(&self, writer: bool) -> Result<Arc<Client>, StoreError> {
        let slot = if writer { &self.writer } else { &self.shared };
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let (client, conn) = self.connect().await?;
        tokio::spawn(drive(conn, None));
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Run `op` on a client within the deadline; a timed-out connection is
    /// dropped so the next operation opens a fresh one.
    async fn run<T, F, Fut>(&self, writer: bool, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        // One deadline for getting a connection and using it: callers
        // queued behind a connect that hangs do not wait a deadline each.
        let work = async {
            let client = self.client(writer).await?;
            op(client).await.map_err(|e| control_err(describe(&e)))
        };
        match tokio::time::timeout(DEADLINE, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let slot = if writer { &self.writer } else { &self.shared };
                *slot.lock().await = None;
                Err(control_err("the control database did not answer in time"))
            }
        }
    }

    /// For code off the async workers (`spawn_blocking`): run `fut` to the
    /// end on the daemon's runtime.
    pub(super) fn block<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(fut)
    }

    async fn listen(
        &self,
        client: Client,
        conn: Conn,
        changes: &broadcast::Sender<Change>,
    ) -> Result<Listening, StoreError> {
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        tokio::spawn(drive(conn, Some((changes.clone(), closed_tx))));
        let row = tokio::time::timeout(
            DEADLINE,
            client.query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&instance_lock(&self.instance)],
            ),
        )
        .await
        .map_err(|_| control_err("taking the instance lock timed out"))?
        .map_err(|e| control_err(describe(&e)))?;
        let locked: bool = row.get(0);
        if locked {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(|e| control_err(describe(&e)))?;
            self.locked.store(true, Ordering::Relaxed);
        }
        Ok(Listening {
            _client: client,
            closed,
            locked,
        })
    }

    /// Hold the name and hear changes for the life of the daemon:
    /// reconnect when the connection is lost, and ask for a catch-up read
    /// whenever notifications may have been missed.
    async fn keep_listening(
        self: Arc<Self>,
        mut listening: Listening,
        changes: broadcast::Sender<Change>,
    ) {
        loop {
            let mut catch_up = tokio::time::interval(CATCH_UP);
            catch_up.tick().await;
            loop {
                tokio::select! {
                    _ = &mut listening.closed => break,
                    _ = catch_up.tick() => { let _ = changes.send(Change::CatchUp); }
                }
            }
            self.locked.store(false, Ordering::Relaxed);
            tracing::error!(instance = %self.instance, "lost the control database connection; writes and new logins are refused until it is back");
            let mut wait = Duration::from_millis(100);
            listening = loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                let attempt = match self.connect().await {
                    Ok((client, conn)) => self.listen(client, conn, &changes).await,
                    Err(e) => Err(e),
                };
                match attempt {
                    Ok(l) if l.locked => break l,
                    Ok(_) => {
                        tracing::error!(instance = %self.instance, "another daemon holds this instance's name; this one stays unavailable")
                    }
                    Err(e) => tracing::debug!(error = %e, "control database still unreachable"),
                }
            };
            tracing::info!(instance = %self.instance, "control database connection back");
            let _ = changes.send(Change::CatchUp);
        }
    }

    // Documents.

    pub(super) async fn put(&self, table: &str, id: &str, doc: &str) -> Result<(), StoreError> {
        self.run(false, |c| async move {
            c.execute(
                "INSERT INTO infraveil_docs (kind, id, rev, doc) VALUES ($1, $2, 1, $3::text::jsonb)
                 ON CONFLICT (kind, id) DO UPDATE SET doc = EXCLUDED.doc, rev = infraveil_docs.rev + 1,
                     xid = pg_current_xact_id(), updated_at = clock_timestamp()",
                &[&table, &id, &doc],
            )
            .await
        })
        .await
        .map(|_| ())
    }

    pub(super) async fn get(
        &self,
        table: &str,
        id: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row = self
            .run(false, |c| async move {
                c.query_opt(
                    "SELECT doc::text, rev FROM infraveil_docs WHERE kind = $1 AND id = $2",
                    &[&table, &id],
                )
                .await
            })
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Replace the document if its revision is still `rev`.
    pub(super) async fn swap(
        &self,
        table: &str,
        id: &str,
        rev: i64,
        doc: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .run(false, |c| async move {
                c.execute(
                    "UPDATE infraveil_docs SET doc = $4::text::jsonb, rev = rev + 1,
                         xid = pg_current_xact_id(), updated_at = clock_timestamp()
                     WHERE kind = $1 AND id = $2 AND rev = $3",
                    &[&table, &id, &rev, &doc],
                )
                .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Documents written by transactions at or after `since` (every one
    /// without it), and the cursor for the next call: the oldest
    /// transaction this snapshot could not see, so nothing committed later
    /// is missed.
    pub(super) async fn changed(
        &self,
        table: &str,
        since: Option<&str>,
    ) -> Result<(String, Vec<String>), StoreError> {
        let rows = self
            .run(false, |c| async move {
                c.query(
                    "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin)
                     SELECT s.xmin, d.doc::text FROM s
                     LEFT JOIN infraveil_docs d ON d.kind = $1
                         AND ($2::text IS NULL OR d.xid >= $2::text::xid8)
                     ORDER BY d.id",
                    &[&table, &since],
                )
                .await
            })
            .await?;
        let cursor = rows
            .first()
            .map(|r| r.get::<_, String>(0))
            .ok_or_else(|| control_err("no snapshot in answer"))?;
        let docs = rows
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(1))
            .collect();
        Ok((cursor, docs))
    }

    /// A 32-byte key every instance shares, made by whichever asks first.
    pub(super) async fn key(&self, name: &str, fresh: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let fresh = fresh.to_vec();
        let row = self
            .run(false, |c| async move {
                c.execute(
                    "INSERT INTO infraveil_keys (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&name, &fresh],
                )
                .await?;
                c.query_one("SELECT value FROM infraveil_keys WHERE name = $1", &[&name])
                    .await
            })
            .await?;
        Ok(row.get(0))
    }

    // Audit chains.

    /// Record this instance's public key. A chain already signed with
    /// another key is refused: its records would no longer verify.
    pub(super) async fn register(&self, public_key: &str) -> Result<(), StoreError> {
        let instance = self.instance.clone();
        let key = public_key.to_owned();
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok());
        let pid = std::process::id() as i32;
        let rows = self
            .run(false, |c| async move {
                let had = c
                    .query_opt(
                        "SELECT public_key, EXISTS (SELECT 1 FROM infraveil_audit WHERE instance = $1)
                         FROM infraveil_instances WHERE id = $1",
                        &[&instance],
                    )
                    .await?;
                c.execute(
                    "INSERT INTO infraveil_instances (id, public_key, host, pid) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET public_key = EXCLUDED.public_key,
                         host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = clock_timestamp()
                     WHERE infraveil_instances.public_key = EXCLUDED.public_key
                         OR NOT EXISTS (SELECT 1 FROM infraveil_audit WHERE instance = $1)",
                    &[&instance, &key, &host, &pid],
                )
                .await?;
                Ok(had)
            })
            .await?;
        if let Some(row) = rows {
            let (old, written): (String, bool) = (row.get(0), row.get(1));
            if old != public_key && written {
                return Err(StoreError::KeyChanged {
                    instance: self.instance.clone(),
                    stored: old,
                    ours: public_key.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Every instance's chain: (instance, public key).
    pub(super) async fn chains(
        &self,
    ) -> Result<Vec<(String, Option<String>, Option<(u64, String)>)>, StoreError> {
        let rows = self
            .run(false, |c| async move {
                // Chains stored without a registered instance are listed
                // too (with no key): a deleted registration must not hide
                // a chain.
                c.query(
                    "SELECT id, public_key, head_seq, head_hash FROM infraveil_instances
                     UNION ALL
                     SELECT DISTINCT a.instance, NULL, NULL::bigint, NULL FROM infraveil_audit a
                     WHERE NOT EXISTS (SELECT 1 FROM infraveil_instances i WHERE i.id = a.instance)
                     ORDER BY 1",
                    &[],
                )
                .await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let head = match (r.get::<_, Option<i64>>(2), r.get::<_, Option<String>>(3)) {
                    (Some(seq), Some(hash)) => Some((seq as u64, hash)),
                    _ => None,
                };
                (r.get(0), r.get(1), head)
            })
            .collect())
    }

    /// Store chunks of this instance's chain. Idempotent: a retry after an
    /// answer lost on the way finds its own chunks and succeeds, but chunks
    /// someone else wrote under the same seqs are a forked chain.
    pub(super) async fn append(
        &self,
        entries: &[(u64, Vec<u8>)],
        head: (u64, &str),
    ) -> Result<(), StoreError> {
        if !self.available() {
            return Err(control_err(
                "this instance does not hold its name in the control database",
            ));
        }
        let keys: Vec<i64> = entries.iter().map(|(k, _)| *k as i64).collect();
        let chunks: Vec<&[u8]> = entries.iter().map(|(_, c)| c.as_slice()).collect();
        let instance = self.instance.as_str();
        let (k, c) = (&keys, &chunks);
        let (head_seq, head_hash) = (head.0 as i64, head.1);
        let inserted = self
            .run(true, |cl| async move {
                // The chunks and the instance's head in one statement (one
                // commit).
                cl.query(
                    "WITH ins AS (
                         INSERT INTO infraveil_audit (instance, first_seq, chunk)
                         SELECT $1, k, c FROM unnest($2::bigint[], $3::bytea[]) AS t(k, c)
                         ON CONFLICT DO NOTHING RETURNING first_seq
                     ), head AS (
                         UPDATE infraveil_instances SET head_seq = $4, head_hash = $5
                         WHERE id = $1 AND coalesce(head_seq, 0) < $4
                     )
                     SELECT first_seq FROM ins",
                    &[&instance, k, c, &head_seq, &head_hash],
                )
                .await
            })
            .await?;
        if inserted.len() == entries.len() {
            return Ok(());
        }
        let stored = self
            .run(true, |cl| async move {
                cl.query(
                    "SELECT first_seq, chunk FROM infraveil_audit WHERE instance = $1 AND first_seq = ANY($2)",
                    &[&instance, k],
                )
                .await
            })
            .await?;
        for row in stored {
            let (seq, chunk): (i64, Vec<u8>) = (row.get(0), row.get(1));
            let ours = entries.iter().find(|(k, _)| *k as i64 == seq);
            if ours.is_none_or(|(_, c)| *c != chunk) {
                return Err(StoreError::Corrupt {
                    what: format!("audit chain of instance {}", self.instance),
                    detail: format!(
                        "seq {seq} was written by another daemon under this instance's name"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Up to `limit` chunks of `chain` from `key` on (or, backwards, from
    /// `key` down).
    pub(super) async fn chunks(
        &self,
        chain: &str,
        key: u64,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let key = key.min(i64::MAX as u64) as i64;
        let sql = if forward {
            "SELECT first_seq, chunk FROM infraveil_audit WHERE instance = $1 AND first_seq >= $2
             ORDER BY first_seq LIMIT $3"
        } else {
            "SELECT first_seq, chunk FROM infraveil_audit WHERE instance = $1 AND first_seq <= $2
             ORDER BY first_seq DESC LIMIT $3"
        };
        let rows = self
            .run(false, |c| async move {
                c.query(sql, &[&chain, &key, &limit]).await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    /// The server's version, for the log at start.
    pub(super) async fn version(&self) -> Result<String, StoreError> {
        let msgs = self
            .run(false, |c| async move {
                c.simple_query("SHOW server_version").await
            })
            .await?;
        Ok(msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default())
    }
}

struct Listening {
    /// Held so the connection (and the lock) lives.
    _client: Client,
    closed: tokio::sync::oneshot::Receiver<()>,
    locked: bool,
}

/// Drive a connection; on the listening one, pass notifications on as
/// changes and say when it closes.
async fn drive(
    mut conn: Conn,
    listener: Option<(broadcast::Sender<Change>, tokio::sync::oneshot::Sender<()>)>,
) {
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if let (Some((changes, _)), Some((table, id))) =
                    (&listener, n.payload().split_once(':'))
                {
                    let _ = changes.send(Change::Row {
                        table: table.to_owned(),
                        id: id.to_owned(),
                    });
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "control database connection ended");
                break;
            }
            None => break,
        }
    }
    if let Some((_, closed)) = listener {
        let _ = closed.send(());
    }
}

/// A tokio-postgres error with the server's message, when there is one.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
