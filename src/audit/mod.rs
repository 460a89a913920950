//! The signed, hash-chained, append-only audit log.
//!
//! Everything that happens (connections, authentication, every statement
//! and its outcome, grants, approvals, policy loads, start and stop) is an
//! [`Event`]. One writer task numbers events, chains and signs them
//! ([`chain`]) and appends them to their own sled tree. Callers that must
//! not proceed before their record is durable ([`Audit::append`]) wait for
//! a flush; the writer flushes once for everyone waiting (group commit), so
//! the cost per statement falls as concurrency rises. Other events
//! ([`Audit::enqueue`]) are flushed within `read_window`.
//!
//! If a record cannot be written, the log is marked failed and stays so:
//! every later append fails, and the proxy refuses statements rather than
//! run them unaudited.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};

use crate::config::AuditConfig;
use crate::store::{Store, StoreError};
use log::AuditLog;
use writer::{Sealer, Writer};

pub mod chain;
pub mod chains;
pub mod event;
pub mod export;
pub mod key;
pub mod layout;
pub mod log;
mod writer;

pub use event::Event;

/// Events waiting for the writer, at most; beyond that, callers wait. Small
/// on purpose: a durable append waits behind everything queued before it,
/// so this bounds its latency when reads flood the log (and throttles the
/// reads to what the log can sign, rather than buffer without end).
const QUEUE: usize = 1024;
/// Events one write takes at most.
const BATCH: usize = 1024;
/// Batches up to this many events are sealed on the writer task itself
/// (tens of microseconds); larger ones on a blocking thread.
const INLINE_BATCH: usize = 32;
/// How often a busy writer takes what is queued for it when nobody waits.
const PACE: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log cannot be written ({0}); infraveil refuses statements until it can")]
    Failed(String),
    /// The log ends in records no signature vouches for. The firewall
    /// stores every batch with its signed last record, so it did not write
    /// them; chaining on would vouch for them with the next signature.
    #[error(
        "the audit log ends in {} record(s) (seq {first} to {head}) that no signature vouches for: \
         infraveil did not write them and will not chain onto them. With the daemon stopped, inspect \
         them (veilctl audit verify --data-dir DIR) and move them aside (veilctl audit set-aside \
         --data-dir DIR), then start again",
        head - first + 1
    )]
    UnsignedTail { first: u64, head: u64 },
    /// The control database cannot take records now; they wait in memory
    /// (reads go on until the queue is full) and are stored when it can.
    #[error(
        "the audit log cannot be written now ({0}); infraveil refuses write statements until it can"
    )]
    Unavailable(String),
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        AuditError::Failed(e.to_string())
    }
}

struct Job {
    /// `None`: only wait until everything before is durable.
    event: Option<Event>,
    /// Present when the caller waits for durability.
    ack: Option<Ack>,
}

/// Answers a caller waiting for durability: the seq durable, or why not.
type Ack = oneshot::Sender<Result<u64, AuditError>>;

/// The latest checkpoint: the chain's head when it was taken.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The checkpoint record's own seq.
    pub seq: u64,
    pub head_seq: u64,
    pub head_hash: String,
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Job>,
    urgent: Arc<tokio::sync::Notify>,
    health: Arc<Health>,
    /// Whether the store can be written at all (a control database may be
    /// gone before the writer has tried).
    store: Arc<Store>,
    public_key: String,
    appended: Arc<AtomicU64>,
    checkpoint: Arc<std::sync::Mutex<Option<Checkpoint>>>,
}

/// How the log is doing, shared by the handles and the writer.
#[derive(Default)]
struct Health {
    /// A write failed for good: every statement is refused from now on.
    failed: AtomicBool,
    /// The control database cannot take records: they wait in memory,
    /// and anything that must be durable first is refused.
    waiting: AtomicBool,
    /// ... and the records waiting reached the bound: every statement is
    /// refused until they are stored.
    full: AtomicBool,
}

/// Called with each checkpoint (to post it to the webhook, say).
pub type CheckpointSink = Arc<dyn Fn(&Checkpoint) + Send + Sync>;

impl Audit {
    /// Start the writer. Returns the handle and the writer task, which ends
    /// when every handle is dropped. `queue` bounds the records held while
    /// a control database cannot take them.
    pub async fn start(
        store: Arc<Store>,
        key: SigningKey,
        config: &AuditConfig,
        queue: usize,
        on_checkpoint: Option<CheckpointSink>,
    ) -> Result<(Audit, tokio::task::JoinHandle<()>), AuditError> {
        let log = AuditLog::open(&store)?;
        // Reading a chain in the control database blocks.
        let l = log.clone();
        let (head, tail) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((l.head()?, l.unsigned_tail()?))
        })
        .await
        .map_err(|e| AuditError::Failed(e.to_string()))??;
        if let Some((first, head)) = tail {
            return Err(AuditError::UnsignedTail { first, head });
        }
        store.register_chain(&key::public_hex(&key)).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let audit = Audit {
            tx,
            urgent: Arc::new(tokio::sync::Notify::new()),
            health: Arc::default(),
            store: store.clone(),
            public_key: key::public_hex(&key),
            appended: Arc::new(AtomicU64::new(0)),
            checkpoint: Arc::new(std::sync::Mutex::new(None)),
        };
        let instance = store.is_shared().then(|| store.instance().to_owned());
        let writer = Writer::new(
            store,
            log,
            Sealer::new(key, head.as_ref(), instance),
            (&audit, config, queue, on_checkpoint),
        );
        let task = tokio::spawn(writer.run(rx));
        Ok((audit, task))
    }

    /// The public key, 64 hex characters.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// False once a write has failed, or while the records waiting for a
    /// control database fill the queue: no statement may run.
    pub fn healthy(&self) -> bool {
        !self.health.failed.load(Ordering::Relaxed) && !self.health.full.load(Ordering::Relaxed)
    }

    /// True while the control database cannot take records: nothing that
    /// must be durable first (a write) may run; reads may.
    pub fn waiting(&self) -> bool {
        self.health.waiting.load(Ordering::Relaxed) || !self.store.available()
    }

    /// Records appended since start.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Append and wait until the record is durable; returns its seq.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        self.check_durable()?;
        let (ack, done) = oneshot::channel();
        self.send(Job {
            event: Some(event),
            ack: Some(ack),
        })
        .await?;
        self.urgent.notify_one();
        done.await
            .unwrap_or_else(|_| Err(AuditError::Failed("the audit writer stopped".into())))
    }

    /// Append several and wait until all are durable (one wait).
    /// With none, waits until every event handed to the log before is
    /// durable.
    pub async fn append_all(&self, events: Vec<Event>) -> Result<(), AuditError> {
        self.check_durable()?;
        let mut events = events.into_iter().map(Some).peekable();
        if events.peek().is_none() {
            return self.durable(None).await;
        }
        while let Some(event) = events.next() {
            if events.peek().is_some() {
                self.send(Job { event, ack: None }).await?;
            } else {
                // The writer takes jobs in order and flushes before it
                // acks, so the last one's ack covers the rest.
                return self.durable(event).await;
            }
        }
        Ok(())
    }

    async fn durable(&self, event: Option<Event>) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.send(Job {
            event,
            ack: Some(ack),
        })
        .await?;
        self.urgent.notify_one();
        done.await
            .unwrap_or_else(|_| Err(AuditError::Failed("the audit writer stopped".into())))
            .map(|_| ())
    }

    /// Queue an event; it is durable within the read window. Waits only if
    /// the queue is full (back-pressure rather than loss).
    pub async fn enqueue(&self, event: Event) -> Result<(), AuditError> {
        self.check()?;
        self.send(Job {
            event: Some(event),
            ack: None,
        })
        .await
    }

    /// [`Audit::enqueue`] from code that cannot wait; if the queue is full
    /// the event is still sent, from a task.
    pub fn enqueue_now(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(Job {
            event: Some(event),
            ack: None,
        }) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(job).await;
            });
        }
    }

    fn check(&self) -> Result<(), AuditError> {
        if self.health.failed.load(Ordering::Relaxed) {
            Err(AuditError::Failed("an earlier write failed".into()))
        } else if self.health.full.load(Ordering::Relaxed) {
            Err(AuditError::Unavailable(
                "the control database cannot take records and the queue is full".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Waiting for durability fails at once while records cannot be stored.
    fn check_durable(&self) -> Result<(), AuditError> {
        self.check()?;
        if self.waiting() {
            return Err(AuditError::Unavailable(
                "the control database cannot take records".into(),
            ));
        }
        Ok(())
    }

    async fn send(&self, job: Job) -> Result<(), AuditError> {
        self.tx
            .send(job)
            .await
            .map_err(|_| AuditError::Failed("the audit writer stopped".into()))
    }
}

/// Verify the log in `store` from the start; `expect_head` is a checkpoint
/// kept elsewhere (`seq`, hex hash).
pub fn verify_store(
    store: &Store,
    key: ed25519_dalek::VerifyingKey,
    expect_head: Option<(u64, String)>,
) -> Result<chain::Summary, VerifyError> {
    chains::verify_log(&AuditLog::open(store)?, key, expect_head)
}

/// A verification's answer as JSON (`veilctl audit verify --output json`,
/// and the admin API's `/v1/audit/verify`).
pub fn verdict(
    result: &Result<chain::Summary, chain::Problem>,
    public_key: &str,
) -> serde_json::Value {
    match result {
        Ok(s) => serde_json::json!({
            "ok": true,
            "public_key": public_key,
            "records": s.records,
            "signatures": s.signatures,
            "unvouched": s.unvouched,
            "head_seq": s.head_seq,
            "head_hash": s.head_hash,
        }),
        Err(p) => serde_json::json!({ "ok": false, "public_key": public_key, "problem": p }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Bad(#[from] chain::Problem),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests;
