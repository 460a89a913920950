//! Every audit chain in the store, as one log: each instance sharing a
//! control database keeps its own chain (its own seqs, signed with its own
//! key); verification checks each chain and each chain's checkpoints, and
//! an export merges the chains by time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::chain::{self, ChainVerifier, Problem, Record, Summary};
use super::event::time_of;
use super::log::AuditLog;
use super::{VerifyError, key};
use crate::store::{Store, StoreError};

/// Verify one chain from the start, checkpoints included: a checkpoint
/// record names the record before it, with that record's hash.
pub fn verify_log(
    log: &AuditLog,
    key: ed25519_dalek::VerifyingKey,
    expect_head: Option<(u64, String)>,
) -> Result<Summary, VerifyError> {
    let mut v = ChainVerifier::from_genesis(key);
    if let Some((seq, hash)) = &expect_head {
        v = v.expect_head(*seq, hash);
    }
    let mut before: Option<(u64, String)> = None;
    for r in log.from(0) {
        let r = r?;
        v.check(&r)?;
        check_checkpoint(&r, before.as_ref())?;
        before = Some((r.seq, r.hash.clone()));
    }
    Ok(v.finish()?)
}

fn check_checkpoint(r: &Record, before: Option<&(u64, String)>) -> Result<(), Problem> {
    if !r.payload.contains("\"type\":\"checkpoint\"") {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "type")]
        kind: String,
        head_seq: u64,
        head_hash: String,
    }
    let Ok(c) = serde_json::from_str::<Named>(&r.payload) else {
        return Ok(());
    };
    if c.kind != "checkpoint" {
        return Ok(());
    }
    match before {
        Some((seq, hash)) if *seq == c.head_seq && *hash == c.head_hash => Ok(()),
        _ => Err(Problem {
            seq: r.seq,
            fault: chain::Fault::Payload,
            detail: format!(
                "the checkpoint names record {}:{}, which is not the record before it",
                c.head_seq, c.head_hash
            ),
        }),
    }
}

/// The verdict over every chain, as `/v1/audit/verify` answers. With one
/// chain (the embedded store) it is that chain's verdict; with several,
/// `ok` only if every chain verifies, the sums, this instance's head, and
/// each chain's own verdict under `chains`. `public_key` is this daemon's;
/// the others' are the keys they registered. Blocking.
pub fn verify_all(
    store: &Store,
    public_key: &str,
    expect_head: Option<(u64, String)>,
) -> Result<serde_json::Value, StoreError> {
    let mine = store.instance().to_owned();
    let mut chains = Vec::new();
    let (mut ok, mut records, mut signatures) = (true, 0u64, 0u64);
    let mut own = None;
    let mut first_problem = None;
    for chain in store.chains("audit")? {
        let (instance, registered, seq) = (chain.instance, chain.public_key, chain.records);
        let is_mine = instance == mine;
        let public = if is_mine {
            public_key.to_owned()
        } else {
            registered.clone().unwrap_or_default()
        };
        let result = match key::parse_public(&public) {
            None => Err(Problem {
                seq: 0,
                fault: chain::Fault::Malformed,
                detail: format!("instance {instance} registered no usable public key"),
            }),
            Some(k) => {
                // This instance's: what the caller expects; another's: the
                // head it registered with its last batch.
                let expect = if is_mine {
                    expect_head.clone()
                } else {
                    chain.head.clone()
                };
                match verify_log(&AuditLog::of(seq), k, expect) {
                    Ok(s) => Ok(s),
                    Err(VerifyError::Bad(p)) => Err(p),
                    Err(VerifyError::Store(e)) => return Err(e),
                }
            }
        };
        let mut v = super::verdict(&result, &public);
        match &result {
            Ok(s) => {
                records += s.records;
                signatures += s.signatures;
            }
            Err(p) => {
                ok = false;
                first_problem.get_or_insert_with(|| {
                    let mut p = serde_json::to_value(p).unwrap_or_default();
                    p["instance"] = serde_json::Value::String(instance.clone());
                    p
                });
            }
        }
        if is_mine && registered.is_some_and(|k| k != public_key) {
            ok = false;
            v["ok"] = false.into();
            v["problem"] = serde_json::json!({"seq": 0, "fault": "signature", "detail": "the control database names another key for this instance"});
        }
        v["instance"] = serde_json::Value::String(instance.clone());
        if is_mine {
            own = Some(v.clone());
        }
        chains.push(v);
    }
    if !store.is_shared() {
        return Ok(chains
            .pop()
            .map(|mut v| {
                if let Some(m) = v.as_object_mut() {
                    m.remove("instance");
                }
                v
            })
            .unwrap_or_default());
    }
    let own = own.unwrap_or_default();
    let mut out = serde_json::json!({
        "ok": ok,
        "public_key": public_key,
        "instance": mine,
        "records": records,
        "signatures": signatures,
        "unvouched": 0,
        "head_seq": own["head_seq"],
        "head_hash": own["head_hash"],
        "chains": chains,
    });
    if let Some(p) = first_problem {
        out["problem"] = p;
    }
    Ok(out)
}

/// Every chain's records from the first at or after `since_ms` (all with
/// `None`) to each chain's head as it is now, merged by time (then by
/// instance and seq). Blocking; read lazily.
pub fn merged(
    store: &Store,
    since_ms: Option<u64>,
) -> Result<impl Iterator<Item = Result<Record, StoreError>>, StoreError> {
    let mut sources = Vec::new();
    for chain in store.chains("audit")? {
        let (instance, log) = (chain.instance, AuditLog::of(chain.records));
        let head = log.head()?.map_or(0, |r| r.seq);
        let start = match since_ms {
            Some(t) => log.seek_time(t)?,
            None => 1,
        };
        let iter: Records = Box::new(
            log.from(start)
                .take_while(move |r| r.as_ref().map_or(true, |r| r.seq <= head)),
        );
        sources.push((instance, iter));
    }
    Ok(Merge::new(sources))
}

/// One chain's records, read lazily.
type Records = Box<dyn Iterator<Item = Result<Record, StoreError>> + Send>;

/// A k-way merge of chains by record time.
struct Merge {
    sources: Vec<Records>,
    /// (time, source, seq) of each source's next record, least first.
    heap: BinaryHeap<Reverse<(u64, usize, u64)>>,
    next: Vec<Option<Record>>,
    failed: Option<StoreError>,
}

impl Merge {
    fn new(sources: Vec<(String, Records)>) -> Merge {
        let mut m = Merge {
            next: sources.iter().map(|_| None).collect(),
            sources: sources.into_iter().map(|(_, s)| s).collect(),
            heap: BinaryHeap::new(),
            failed: None,
        };
        for i in 0..m.sources.len() {
            m.pull(i);
        }
        m
    }

    fn pull(&mut self, i: usize) {
        match self.sources[i].next() {
            Some(Ok(r)) => {
                let t = time_of(&r.payload).unwrap_or(0);
                self.heap.push(Reverse((t, i, r.seq)));
                self.next[i] = Some(r);
            }
            Some(Err(e)) => self.failed = Some(e),
            None => {}
        }
    }
}

impl Iterator for Merge {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            // A chain that cannot be read ends the export with its error,
            // rather than leave its records out unsaid.
            self.heap.clear();
            return Some(Err(e));
        }
        let Reverse((_, i, _)) = self.heap.pop()?;
        let r = self.next[i].take();
        self.pull(i);
        r.map(Ok)
    }
}
