//! The audit log's one writer task: it numbers events, chains and signs
//! them, stores them in batches (group commit) and answers those waiting
//! for durability. With a control database that cannot take records, the
//! sealed batches wait in memory, in order, and are stored when it is
//! back; the chain never skips or repeats a seq.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;

use super::chain::{self, Record};
use super::log::AuditLog;
use super::{
    Ack, Audit, AuditError, BATCH, Checkpoint, CheckpointSink, Event, Health, INLINE_BATCH, Job,
    PACE, event, layout,
};
use crate::config::AuditConfig;
use crate::store::{Store, StoreError};
use crate::time::now_ms;

/// How often stored-later batches are tried again.
const RETRY: Duration = Duration::from_millis(250);

/// A sealed batch not yet stored: its chunks, how many records, and the
/// chain's head after it (seq, hex hash).
type Sealed = (Vec<(u64, Vec<u8>)>, usize, (u64, String));

pub(super) struct Writer {
    store: Arc<Store>,
    log: AuditLog,
    /// Someone waits for durability: take the queue now.
    urgent: Arc<tokio::sync::Notify>,
    /// Taken while a batch is sealed off the async workers.
    sealer: Option<Sealer>,
    health: Arc<Health>,
    /// Sealed, in chain order, waiting for a control database.
    unstored: VecDeque<Sealed>,
    /// Records in `unstored`, and how many may wait before every
    /// statement is refused.
    waiting: usize,
    limit: usize,
    appended: Arc<AtomicU64>,
    /// The last record stored (seq, hex hash).
    head: Arc<std::sync::Mutex<Option<(u64, String)>>>,
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
    pub(super) fn new(
        store: Arc<Store>,
        log: AuditLog,
        sealer: Sealer,
        (audit, config, limit, on_checkpoint): (
            &Audit,
            &AuditConfig,
            usize,
            Option<CheckpointSink>,
        ),
    ) -> Writer {
        Writer {
            store,
            log,
            urgent: audit.urgent.clone(),
            sealer: Some(sealer),
            health: audit.health.clone(),
            unstored: VecDeque::new(),
            waiting: 0,
            limit: limit.max(1),
            appended: audit.appended.clone(),
            head: audit.head.clone(),
            checkpoint: audit.checkpoint.clone(),
            on_checkpoint,
            window: config.read_window,
            every: config.checkpoint_every.max(1),
            interval: config.checkpoint_interval,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
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
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = retry.tick(), if !self.unstored.is_empty() => {
                    let _ = self.store_sealed(true).await;
                    None
                }
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
        let acks = if self.health.waiting.load(Ordering::Relaxed) && !acks.is_empty() {
            // Those who wait for durability are not kept waiting on a
            // database that is not there (they got in just as it went).
            let e = AuditError::Unavailable("the control database cannot take records".into());
            for a in acks {
                let _ = a.send(Err(e.clone()));
            }
            Vec::new()
        } else {
            acks
        };
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
                if let AuditError::Failed(_) = e {
                    tracing::error!(error = %e, "audit log write failed; refusing statements from now on");
                    self.health.failed.store(true, Ordering::Relaxed);
                }
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
        if self.health.failed.load(Ordering::Relaxed) {
            return Err(AuditError::Failed("an earlier write failed".into()));
        }
        if events.is_empty() && !checkpoint {
            return self.store_sealed(false).await.map(|()| false);
        }
        let inline = events.len() <= INLINE_BATCH;
        let Some(mut sealer) = self.sealer.take() else {
            return Err(AuditError::Failed("the audit writer lost its state".into()));
        };
        let seal = move || {
            let (chunks, taken) = sealer.seal(events, checkpoint);
            let n = chunks.records();
            let head = (sealer.seq, hex::encode(sealer.prev));
            (sealer, (chunks.finish(), n, head), taken)
        };
        let (sealer, sealed, taken) = if inline {
            seal()
        } else {
            match tokio::task::spawn_blocking(seal).await {
                Ok(parts) => parts,
                Err(e) => return Err(AuditError::Failed(format!("audit writer: {e}"))),
            }
        };
        // Sealed records advanced the chain: they are stored in order
        // before anything sealed after them, or the log fails for good.
        self.sealer = Some(sealer);
        let written = sealed.1;
        self.waiting += written;
        self.unstored.push_back(sealed);
        if let Some(c) = taken {
            tracing::info!(head_seq = c.head_seq, head_hash = %c.head_hash, "audit checkpoint");
            if let Some(sink) = &self.on_checkpoint {
                sink(&c);
            }
            *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
        }
        self.store_sealed(false).await?;
        Ok(written > 0)
    }

    /// Store the sealed batches, oldest first. While a control database
    /// cannot take them they wait (tried again every `RETRY`, or now with
    /// `now`), and the log is `waiting`, or `full` past the bound. Any
    /// other failure fails the log for good.
    async fn store_sealed(&mut self, now: bool) -> Result<(), AuditError> {
        let recovers = self.store.is_shared();
        let was_waiting = self.health.waiting.load(Ordering::Relaxed);
        if was_waiting && (!now || !self.store.available()) {
            self.note_waiting();
            return Err(AuditError::Unavailable(
                "the control database cannot take records".into(),
            ));
        }
        while let Some((chunks, n, head)) = self.unstored.front() {
            let n = *n;
            match self.log.append(chunks, (head.0, &head.1)).await {
                Ok(()) => {
                    *self.head.lock().unwrap_or_else(|p| p.into_inner()) = Some(head.clone());
                    self.unstored.pop_front();
                    self.waiting -= n;
                    self.appended.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e @ StoreError::Control(_)) if recovers => {
                    if !was_waiting {
                        tracing::error!(error = %e, "the control database cannot take audit records; write statements are refused, reads go on while their records wait in memory");
                    }
                    self.health.waiting.store(true, Ordering::Relaxed);
                    self.note_waiting();
                    return Err(AuditError::Unavailable(e.to_string()));
                }
                Err(e) => {
                    self.health.failed.store(true, Ordering::Relaxed);
                    return Err(AuditError::Failed(e.to_string()));
                }
            }
        }
        if was_waiting {
            tracing::info!("audit records stored again: the control database is back");
            self.health.waiting.store(false, Ordering::Relaxed);
            self.health.full.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn note_waiting(&self) {
        let full = self.waiting >= self.limit;
        if full && !self.health.full.swap(true, Ordering::Relaxed) {
            tracing::error!(
                records = self.waiting,
                "audit records waiting for the control database reached [state] queue; every statement is refused until they are stored"
            );
        }
    }
}

/// The chain's state: the key, the last seq and hash.
pub(super) struct Sealer {
    key: SigningKey,
    seq: u64,
    prev: [u8; 32],
    /// Never goes back, even if the clock does: `time` rises with `seq`,
    /// so exports can seek by time.
    time: u64,
    /// Named in every record when several instances share a store.
    instance: Option<String>,
}

impl Sealer {
    /// Chain on from `head` (from the start without one).
    pub(super) fn new(key: SigningKey, head: Option<&Record>, instance: Option<String>) -> Sealer {
        Sealer {
            key,
            seq: head.map_or(0, |r| r.seq),
            prev: head
                .and_then(|r| hex::decode(&r.hash).ok())
                .and_then(|b| b.try_into().ok())
                .unwrap_or(chain::GENESIS),
            time: head.and_then(|r| event::time_of(&r.payload)).unwrap_or(0),
            instance,
        }
    }

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
        e.write_payload(
            chunks.begin_record(self.seq, &self.prev),
            self.seq,
            time,
            self.instance.as_deref(),
        );
        self.prev = chunks.end_record();
    }
}
