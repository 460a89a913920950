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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};

use crate::config::AuditConfig;
use crate::store::{Store, StoreError};
use crate::time::now_ms;
use log::AuditLog;

pub mod chain;
pub mod event;
pub mod export;
pub mod key;
pub mod layout;
pub mod log;

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
    failed: Arc<AtomicBool>,
    public_key: String,
    appended: Arc<AtomicU64>,
    checkpoint: Arc<std::sync::Mutex<Option<Checkpoint>>>,
}

/// Called with each checkpoint (to post it to the webhook, say).
pub type CheckpointSink = Arc<dyn Fn(&Checkpoint) + Send + Sync>;

impl Audit {
    /// Start the writer. Returns the handle and the writer task, which ends
    /// when every handle is dropped.
    pub fn start(
        store: Arc<Store>,
        key: SigningKey,
        config: &AuditConfig,
        on_checkpoint: Option<CheckpointSink>,
    ) -> Result<(Audit, tokio::task::JoinHandle<()>), AuditError> {
        let log = AuditLog::open(&store)?;
        let head = log.head()?;
        if let Some((first, head)) = log.unsigned_tail()? {
            return Err(AuditError::UnsignedTail { first, head });
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let audit = Audit {
            tx,
            urgent: Arc::new(tokio::sync::Notify::new()),
            failed: Arc::new(AtomicBool::new(false)),
            public_key: key::public_hex(&key),
            appended: Arc::new(AtomicU64::new(0)),
            checkpoint: Arc::new(std::sync::Mutex::new(None)),
        };
        let writer = Writer {
            store,
            log,
            urgent: audit.urgent.clone(),
            sealer: Some(Sealer {
                key,
                seq: head.as_ref().map_or(0, |r| r.seq),
                prev: head
                    .as_ref()
                    .and_then(|r| hex::decode(&r.hash).ok())
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or(chain::GENESIS),
                time: head
                    .as_ref()
                    .and_then(|r| event::time_of(&r.payload))
                    .unwrap_or(0),
            }),
            failed: audit.failed.clone(),
            appended: audit.appended.clone(),
            checkpoint: audit.checkpoint.clone(),
            on_checkpoint,
            window: config.read_window,
            every: config.checkpoint_every.max(1),
            interval: config.checkpoint_interval,
        };
        let task = tokio::spawn(writer.run(rx));
        Ok((audit, task))
    }

    /// The public key, 64 hex characters.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// False once a write has failed.
    pub fn healthy(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
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
        self.check()?;
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
        self.check()?;
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
        if self.healthy() {
            Ok(())
        } else {
            Err(AuditError::Failed("an earlier write failed".into()))
        }
    }

    async fn send(&self, job: Job) -> Result<(), AuditError> {
        self.tx
            .send(job)
            .await
            .map_err(|_| AuditError::Failed("the audit writer stopped".into()))
    }
}

struct Writer {
    store: Arc<Store>,
    log: AuditLog,
    /// Someone waits for durability: take the queue now.
    urgent: Arc<tokio::sync::Notify>,
    /// Taken while a batch is sealed off the async workers.
    sealer: Option<Sealer>,
    failed: Arc<AtomicBool>,
    appended: Arc<AtomicU64>,
    checkpoint: Arc<std::sync::Mutex<Option<Checkpoint>>>,
    on_checkpoint: Option<CheckpointSink>,
    window: Duration,
    every: u64,
    interval: Duration,
}

/// What the writer holds between rounds.
#[derive(Default)]
struct Held {
    /// Events nobody waits for, taken but not yet written.
    events: Vec<Event>,
    /// Reads among them whose outcome has not come: (session, statement)
    /// to index in `events`.
    reads: HashMap<(u64, u64), usize>,
    /// Since when `events` has been non-empty.
    since: Option<Instant>,
    /// Written (a full batch) but not yet flushed, since when.
    unflushed: Option<Instant>,
    since_checkpoint: u64,
}

impl Held {
    /// When the oldest record not yet durable must be.
    fn deadline(&self, window: Duration) -> Option<tokio::time::Instant> {
        match (self.since, self.unflushed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|t| tokio::time::Instant::from_std(t + window))
    }

    /// Take `first` and whatever else is queued, up to a batch. Returns
    /// how many jobs were taken and who waits for durability.
    fn take(&mut self, first: Job, rx: &mut mpsc::Receiver<Job>) -> (usize, Vec<Ack>) {
        let mut acks = Vec::new();
        let mut took = 0;
        let mut next = Some(first);
        while let Some(j) = next.take() {
            took += 1;
            // A read's outcome joins its statement's record while that is
            // still held: one record per read.
            let event = match j.event {
                Some(e) => match e.outcome_of().and_then(|k| self.reads.remove(&k)) {
                    Some(i) => self.events[i].absorb(e),
                    None => Some(e),
                },
                None => None,
            };
            if let Some(event) = event {
                if let Some(k) = event.open_read() {
                    self.reads.insert(k, self.events.len());
                }
                self.events.push(event);
                self.since_checkpoint += 1;
            }
            if let Some(a) = j.ack {
                acks.push(a);
            }
            if self.events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.since.get_or_insert_with(Instant::now);
        (took, acks)
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        // Events nobody waits for are written together when someone
        // waits, the batch is full, a checkpoint is due or the read window
        // ends. One store write and one flush per window at low load,
        // instead of one per read (sled's write path, not the chain, was
        // the cost).
        let mut held = Held::default();
        let mut last_checkpoint = Instant::now();
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let window_end = tokio::time::sleep(self.window);
        tokio::pin!(window_end);
        let mut armed: Option<tokio::time::Instant> = None;
        let pace = tokio::time::sleep(PACE);
        tokio::pin!(pace);
        let mut busy = false;
        let mut pending: Option<Job> = None;
        // Jobs taken in the last round.
        let mut took = 0;
        loop {
            let deadline = held.deadline(self.window);
            // One timer, moved only when the deadline does: a new one per
            // job was a timer-wheel insert and removal per record.
            if deadline.is_some() && deadline != armed {
                if let Some(d) = deadline {
                    window_end.as_mut().reset(d);
                }
                armed = deadline;
            }
            // Busy with records nobody waits for: take them every PACE
            // rather than be woken for each (a wake-up per record, often of
            // another worker thread, showed in profiles). A durable append
            // wakes the writer at once through `urgent`.
            if busy {
                // A full take means senders may be waiting for room: no pause.
                if took < BATCH {
                    pace.as_mut().reset(tokio::time::Instant::now() + PACE);
                    tokio::select! {
                        _ = self.urgent.notified() => {}
                        _ = &mut pace => {}
                    }
                }
                match rx.try_recv() {
                    Ok(j) => pending = Some(j),
                    // Quiet, or every handle gone: wait as usual.
                    Err(_) => busy = false,
                }
            }
            let first = if let Some(j) = pending.take() {
                Some(j)
            } else {
                tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => Some(j),
                    None => return self.close(held.events).await,
                },
                _ = &mut window_end, if deadline.is_some() => {
                    armed = None;
                    None
                }
                _ = tick.tick() => None,
                }
            };
            let mut acks = Vec::new();
            took = 0;
            if let Some(j) = first {
                (took, acks) = held.take(j, &mut rx);
                busy = true;
            }
            self.settle(&mut held, acks, &mut last_checkpoint).await;
        }
    }

    /// Every handle is gone: make what is held durable.
    async fn close(&mut self, events: Vec<Event>) {
        if !events.is_empty()
            && let Err(e) = self.write(events, false).await
        {
            tracing::error!(error = %e, "audit log write failed at shutdown");
        }
        let _ = self.store.flush().await;
    }

    /// Write and flush what is due (someone waits, a checkpoint is due, the
    /// window ended, or a batch is full), and answer those who wait.
    async fn settle(&mut self, held: &mut Held, acks: Vec<Ack>, last_checkpoint: &mut Instant) {
        let checkpoint_due = held.since_checkpoint > 0
            && (held.since_checkpoint >= self.every || last_checkpoint.elapsed() >= self.interval);
        let window_due = held
            .since
            .into_iter()
            .chain(held.unflushed)
            .any(|t| t.elapsed() >= self.window);
        let flush_due = !acks.is_empty() || checkpoint_due || window_due;
        if !flush_due && held.events.len() < BATCH {
            return;
        }
        let events = std::mem::take(&mut held.events);
        held.reads.clear();
        let since = held.since.take();
        let result = match self.write(events, checkpoint_due).await {
            Ok(_) if flush_due => {
                if checkpoint_due {
                    held.since_checkpoint = 0;
                    *last_checkpoint = Instant::now();
                }
                held.unflushed = None;
                self.store.flush().await.map_err(AuditError::from)
            }
            // A full batch nobody waits for: written now, flushed with the
            // window (or the next durable append).
            Ok(_) => {
                held.unflushed = held.unflushed.or(since);
                Ok(())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let seq = self.sealer.as_ref().map_or(0, |s| s.seq);
                for a in acks {
                    let _ = a.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; refusing statements from now on");
                self.failed.store(true, Ordering::Relaxed);
                for a in acks {
                    let _ = a.send(Err(e.clone()));
                }
            }
        }
    }

    /// Seal and store the events (and a checkpoint after them). A small
    /// batch (the common case: one signature and a few payloads) is sealed
    /// right here; a large one on a blocking thread, so the sessions'
    /// tasks never wait behind it. Returns whether anything was written.
    async fn write(&mut self, events: Vec<Event>, checkpoint: bool) -> Result<bool, AuditError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(AuditError::Failed("an earlier write failed".into()));
        }
        if events.is_empty() && !checkpoint {
            return Ok(false);
        }
        let inline = events.len() <= INLINE_BATCH;
        let Some(mut sealer) = self.sealer.take() else {
            return Err(AuditError::Failed("the audit writer lost its state".into()));
        };
        let log = self.log.clone();
        let seal_and_put = move || {
            let (chunks, taken) = sealer.seal(events, checkpoint);
            let n = chunks.records();
            let put = log.put(chunks.finish()).map(|()| n);
            (sealer, put, taken)
        };
        let (sealer, put, taken) = if inline {
            seal_and_put()
        } else {
            match tokio::task::spawn_blocking(seal_and_put).await {
                Ok(parts) => parts,
                Err(e) => return Err(AuditError::Failed(format!("audit writer: {e}"))),
            }
        };
        // Sealed records that were not stored advanced the chain state;
        // the log is failed from here on, so that state is never used.
        self.sealer = Some(sealer);
        let written = put?;
        self.appended.fetch_add(written as u64, Ordering::Relaxed);
        if let Some(c) = taken {
            tracing::info!(head_seq = c.head_seq, head_hash = %c.head_hash, "audit checkpoint");
            if let Some(sink) = &self.on_checkpoint {
                sink(&c);
            }
            *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
        }
        Ok(written > 0)
    }
}

/// The chain's state: the key, the last seq and hash.
struct Sealer {
    key: SigningKey,
    seq: u64,
    prev: [u8; 32],
    /// Never goes back, even if the clock does: `time` rises with `seq`,
    /// so exports can seek by time.
    time: u64,
}

impl Sealer {
    /// Number and chain `events`, then a checkpoint naming the head if
    /// asked, and sign the last record: its hash covers every record
    /// before it, so one signature vouches for the batch (and the batch is
    /// stored atomically with it). Payloads are serialised once, straight
    /// into the stored chunks.
    fn seal(
        &mut self,
        events: Vec<Event>,
        checkpoint: bool,
    ) -> (layout::Chunks, Option<Checkpoint>) {
        self.time = self.time.max(now_ms());
        let time = event::format_time(self.time);
        let mut chunks = layout::Chunks::default();
        for e in &events {
            self.push(&mut chunks, e, &time);
        }
        let mut taken = None;
        if checkpoint && self.seq > 0 {
            let (head_seq, head_hash) = (self.seq, hex::encode(self.prev));
            let head = Event::Checkpoint {
                head_seq,
                head_hash: head_hash.clone(),
            };
            self.push(&mut chunks, &head, &time);
            taken = Some(Checkpoint {
                seq: self.seq,
                head_seq,
                head_hash,
            });
        }
        if chunks.records() > 0 {
            chunks.sign_last(&chain::sign_bytes(&self.key, &self.prev));
        }
        (chunks, taken)
    }

    fn push(&mut self, chunks: &mut layout::Chunks, e: &Event, time: &str) {
        self.seq += 1;
        e.write_payload(chunks.begin_record(self.seq, &self.prev), self.seq, time);
        self.prev = chunks.end_record();
    }
}

/// Verify the log in `store` from the start; `expect_head` is a checkpoint
/// kept elsewhere (`seq`, hex hash).
pub fn verify_store(
    store: &Store,
    key: ed25519_dalek::VerifyingKey,
    expect_head: Option<(u64, String)>,
) -> Result<chain::Summary, VerifyError> {
    let mut v = chain::ChainVerifier::from_genesis(key);
    if let Some((seq, hash)) = &expect_head {
        v = v.expect_head(*seq, hash);
    }
    for r in AuditLog::open(store)?.from(0) {
        v.check(&r?)?;
    }
    Ok(v.finish()?)
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
