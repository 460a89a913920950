//! Where the audit log lives in the store: chunks of records (see
//! [`super::layout`]) in one [`Sequence`], each keyed by the seq of its
//! first record, so the tree's order is the log's order.

use super::chain::Record;
use super::layout;
use crate::store::{Entry, Sequence, Store, StoreError};

const AUDIT: &str = "audit";
const AUDIT_SET_ASIDE: &str = "audit-set-aside";

/// The stored audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    chunks: Sequence,
}

impl AuditLog {
    /// This instance's log.
    pub fn open(store: &Store) -> Result<AuditLog, StoreError> {
        Ok(AuditLog {
            chunks: store.sequence(AUDIT)?,
        })
    }

    /// The log held in `chunks` (one chain of a shared store).
    pub fn of(chunks: Sequence) -> AuditLog {
        AuditLog { chunks }
    }

    /// Append chunks (from [`layout::encode`]) atomically. Embedded, not
    /// yet durable; in a control database, committed.
    pub async fn append(
        &self,
        chunks: &[(u64, Vec<u8>)],
        head: (u64, &str),
    ) -> Result<(), StoreError> {
        self.chunks.append(chunks, head).await
    }

    /// [`AuditLog::append`] for the embedded store, outside async code.
    pub fn put(&self, chunks: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.chunks.insert(chunks)
    }

    /// Records from the last one backwards.
    pub fn backwards(&self) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        self.chunks.backwards().flat_map(|item| {
            let mut records = chunk(item);
            records.reverse();
            records
        })
    }

    /// The last record.
    pub fn head(&self) -> Result<Option<Record>, StoreError> {
        self.backwards().next().transpose()
    }

    /// The first and last seq of the records after the log's last
    /// signature, if it ends in any.
    pub fn unsigned_tail(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let mut tail: Option<(u64, u64)> = None;
        for r in self.backwards() {
            let r = r?;
            if r.sig.is_some() {
                break;
            }
            tail = Some((r.seq, tail.map_or(r.seq, |(_, head)| head)));
        }
        Ok(tail)
    }

    /// Move the records after the log's last signature into the
    /// `audit-set-aside` tree (kept, for whoever investigates), so the
    /// firewall can chain on from its own last signed record. Returns the
    /// seqs moved. For an operator, with the daemon stopped.
    pub fn set_aside_unsigned_tail(&self, store: &Store) -> Result<Option<(u64, u64)>, StoreError> {
        // Walk back over the chunks holding the tail: each is moved whole,
        // but the one holding the last signature is split after it.
        let mut moved = Vec::new();
        let mut whole = Vec::new();
        let mut split: Option<(u64, Vec<Record>)> = None;
        for item in self.chunks.backwards() {
            let (k, v) = item?;
            let records = layout::decode(&v).map_err(|e| corrupt("audit chunk", &e))?;
            match records.iter().rposition(|r| r.sig.is_some()) {
                Some(i) => {
                    moved.splice(0..0, records[i + 1..].iter().cloned());
                    if i + 1 < records.len() {
                        split = Some((k, records[..=i].to_vec()));
                    }
                    break;
                }
                None => {
                    moved.splice(0..0, records);
                    whole.push(k);
                }
            }
        }
        let (Some(first), Some(head)) = (moved.first().map(|r| r.seq), moved.last().map(|r| r.seq))
        else {
            return Ok(None);
        };
        let aside = store.sequence(AUDIT_SET_ASIDE)?;
        aside.insert(layout::encode(&moved).map_err(|e| corrupt("audit record", &e))?)?;
        store.flush_blocking()?;
        // One atomic batch: a crash midway must not drop the signed part
        // of a split chunk.
        let mut insert = Vec::new();
        if let Some((k, records)) = split {
            whole.push(k);
            insert = layout::encode(&records).map_err(|e| corrupt("audit record", &e))?;
        }
        self.chunks.replace(&whole, insert)?;
        store.flush_blocking()?;
        Ok(Some((first, head)))
    }

    /// Record `seq`, if stored.
    fn get(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        let Some(item) = self.chunks.at_or_before(seq)? else {
            return Ok(None);
        };
        for r in chunk(Ok(item)) {
            let r = r?;
            if r.seq == seq {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// The first seq whose record is from `since_ms` on, found by halving
    /// (record times never go back as seq rises). A record that is missing
    /// or unreadable makes it answer 1, so the caller scans from the start
    /// rather than skip anything.
    pub fn seek_time(&self, since_ms: u64) -> Result<u64, StoreError> {
        let Some(head) = self.head()? else {
            return Ok(1);
        };
        let (mut lo, mut hi) = (1u64, head.seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(t) = self
                .get(mid)
                .ok()
                .flatten()
                .and_then(|r| super::event::time_of(&r.payload))
            else {
                return Ok(1);
            };
            if t < since_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Records from `from_seq` on, in order, read lazily.
    pub fn from(
        &self,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<Record, StoreError>> + Send + 'static {
        // The chunk holding `from_seq` starts at or before it. A failure to
        // find it is reported, not passed over (records would be skipped).
        let (start, failed) = match self.chunks.at_or_before(from_seq) {
            Ok(Some((k, _))) => (k, None),
            Err(e) => (from_seq, Some(Err(e))),
            Ok(None) => (from_seq, None),
        };
        failed.into_iter().chain(
            self.chunks
                .from(start)
                .flat_map(chunk)
                .filter(move |r| r.as_ref().map_or(true, |r| r.seq >= from_seq)),
        )
    }
}

/// The records of one stored chunk (an error stands for them all).
fn chunk(item: Result<Entry, StoreError>) -> Vec<Result<Record, StoreError>> {
    let (seq, v) = match item {
        Ok(kv) => kv,
        Err(e) => return vec![Err(e)],
    };
    match layout::decode(&v) {
        Ok(records) => records.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(corrupt(&format!("audit record {seq}"), &e))],
    }
}

fn corrupt(what: &str, detail: &str) -> StoreError {
    StoreError::corrupt(what, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain;

    /// Chunks read in order from any seq, the head found, and an unsigned
    /// tail (forged records after the last signature, some in the same
    /// chunk as it) moved aside whole, leaving the log ending signed.
    #[test]
    fn chunks_read_through_and_an_unsigned_tail_is_set_aside() {
        let dir = std::env::temp_dir().join(format!(
            "infraveil-audit-log-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let s = Store::open(&dir).unwrap();
        let log = AuditLog::open(&s).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let mut prev = chain::GENESIS;
        let mut records = Vec::new();
        for seq in 1..=400u64 {
            let payload = format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "y".repeat(150));
            // Signed at 200 and 390; 391..=400 are a forged, unsigned tail.
            let signed = seq == 200 || seq == 390;
            let (r, h) = chain::seal(seq, &prev, payload, signed.then_some(&key));
            records.push(r);
            prev = h;
        }
        // Two writes: 1..=200, then 201..=400 in chunks, the tail sharing
        // the last chunk with record 390.
        log.put(layout::encode(&records[..200]).unwrap()).unwrap();
        log.put(layout::encode(&records[200..]).unwrap()).unwrap();
        let all: Vec<_> = log.from(0).map(Result::unwrap).collect();
        assert_eq!(all, records);
        for from in [1, 57, 200, 201, 399] {
            let first = log.from(from).next().unwrap().unwrap();
            assert_eq!(first.seq, from);
        }
        assert_eq!(log.head().unwrap().unwrap().seq, 400);
        assert_eq!(log.get(333).unwrap().unwrap(), records[332]);
        assert_eq!(log.unsigned_tail().unwrap(), Some((391, 400)));

        assert_eq!(log.set_aside_unsigned_tail(&s).unwrap(), Some((391, 400)));
        assert_eq!(log.unsigned_tail().unwrap(), None);
        assert_eq!(log.head().unwrap().unwrap().seq, 390);
        let kept: Vec<_> = log.from(0).map(Result::unwrap).collect();
        assert_eq!(kept, records[..390]);
        let aside = s.sequence(AUDIT_SET_ASIDE).unwrap();
        let moved: Vec<_> = aside
            .from(0)
            .flat_map(|kv| layout::decode(&kv.unwrap().1).unwrap())
            .collect();
        assert_eq!(moved, records[390..]);
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
