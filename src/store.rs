//! The state store: the one owner of sled. Everything the firewall must not
//! forget (grants now; approvals and the audit log use their own trees) lives
//! under `data_dir`, and the rest of the code talks to the typed functions
//! here, never to trees and byte keys.
//!
//! A data directory belongs to one process: [`Store::open`] takes an
//! exclusive lock on `data_dir/infraveil.lock` first, so a second daemon
//! fails with a clear message instead of two writers corrupting the store.
//! Writes are durable only after [`Store::flush`]; callers flush before they
//! tell anyone a change succeeded.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::approvals::ApprovalRequest;
use crate::audit::chain::Record;
use crate::audit::layout;
use crate::grants::Grant;

const GRANTS: &str = "grants";
const APPROVALS: &str = "approvals";
const AUDIT: &str = "audit";
const META: &str = "meta";
const APPROVERS: &str = "approvers";
const AUDIT_SET_ASIDE: &str = "audit-set-aside";

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data directory {dir} is in use by another infraveil process{holder}; \
         stop it first, or give this one its own data_dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("cannot use data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    #[error("state store holds an unreadable {what}: {detail}")]
    Corrupt { what: String, detail: String },
}

/// The open store. Cheap to share behind an `Arc`; sled is internally
/// concurrent.
pub struct Store {
    db: sled::Db,
    grants: sled::Tree,
    approvals: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    approvers: sled::Tree,
    dir: PathBuf,
    // Held for the life of the store; the OS drops the lock with the file.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Open (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        // Secrets and keys live here; nobody else needs to read it.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let lock = lock(data_dir)?;
        let db = sled::Config::new()
            .path(data_dir.join("state"))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let grants = db.open_tree(GRANTS)?;
        let approvals = db.open_tree(APPROVALS)?;
        let audit = db.open_tree(AUDIT)?;
        let meta = db.open_tree(META)?;
        let approvers = db.open_tree(APPROVERS)?;
        Ok(Store {
            db,
            grants,
            approvals,
            audit,
            meta,
            approvers,
            dir: data_dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make every write so far durable. Call before telling a user that a
    /// change succeeded; concurrent callers share one fsync.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // On a blocking thread of our own rather than sled's
        // `flush_async`, which hands the flush to sled's IO pool with a
        // wake-up of all seven of its idle threads (a third of the
        // daemon's CPU under TPC-B in profiles).
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(r) => r.map(|_| ()).map_err(StoreError::from),
            // The flush panicked or the runtime is shutting down.
            Err(e) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                e.to_string(),
            )))),
        }
    }

    /// [`Store::flush`] for code outside an async context.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A random 32-byte key, created on first use and kept for the life of
    /// the data directory (e.g. the key that derives SCRAM salts).
    pub fn key(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("key/{name}");
        let fresh: [u8; 32] = rand::random();
        // Compare-and-swap so two callers racing on first use agree.
        let _ =
            self.meta
                .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(&fresh[..]))?;
        let stored = self
            .meta
            .get(key.as_bytes())?
            .ok_or_else(|| corrupt(&key, "vanished after being written"))?;
        let out: [u8; 32] = stored
            .as_ref()
            .try_into()
            .map_err(|_| corrupt(&key, "is not 32 bytes"))?;
        self.flush_blocking()?;
        Ok(out)
    }

    /// Insert or replace a grant (not yet durable: see [`Store::flush`]).
    pub fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        put(&self.grants, &grant.id, grant, "grant")
    }

    /// Every grant ever issued, in id order.
    pub fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        all(&self.grants, "grant")
    }

    /// Insert or replace an approval request (not yet durable).
    pub fn put_approval(&self, req: &ApprovalRequest) -> Result<(), StoreError> {
        put(&self.approvals, &req.id, req, "approval")
    }

    /// Every approval request, in id order.
    pub fn approvals(&self) -> Result<Vec<ApprovalRequest>, StoreError> {
        all(&self.approvals, "approval")
    }

    /// Insert or replace an approver secret (not yet durable).
    pub fn put_approver_secret<T: serde::Serialize>(
        &self,
        id: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        put(&self.approvers, id, value, "approver secret")
    }

    /// Every approver secret, in id order.
    pub fn approver_secrets<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        all(&self.approvers, "approver secret")
    }

    /// Append audit chunks, each keyed by the big-endian seq of its first
    /// record, so the tree's order is the log's order (see
    /// [`crate::audit::layout`]); atomically. Not yet durable.
    pub fn put_audit(&self, chunks: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (first, bytes) in chunks {
            batch.insert(&first.to_be_bytes(), bytes);
        }
        self.audit.apply_batch(batch)?;
        Ok(())
    }

    /// Audit records from the last one backwards.
    pub fn audit_backwards(&self) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        self.audit.iter().rev().flat_map(|item| {
            let mut records = chunk(item);
            records.reverse();
            records
        })
    }

    /// The first and last seq of the records after the log's last
    /// signature, if it ends in any.
    pub fn audit_unsigned_tail(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let mut tail: Option<(u64, u64)> = None;
        for r in self.audit_backwards() {
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
    pub fn audit_set_aside_unsigned_tail(&self) -> Result<Option<(u64, u64)>, StoreError> {
        // Walk back over the chunks holding the tail: each is moved whole,
        // but the one holding the last signature is split after it.
        let mut moved = Vec::new();
        let mut whole = Vec::new();
        let mut split: Option<(sled::IVec, Vec<Record>)> = None;
        for item in self.audit.iter().rev() {
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
        let aside = self.db.open_tree(AUDIT_SET_ASIDE)?;
        for (k, v) in layout::encode(&moved).map_err(|e| corrupt("audit record", &e))? {
            aside.insert(k.to_be_bytes(), v)?;
        }
        aside.flush()?;
        // One atomic batch: a crash midway must not drop the signed part
        // of a split chunk.
        let mut batch = sled::Batch::default();
        for k in whole {
            batch.remove(k);
        }
        if let Some((k, records)) = split {
            batch.remove(k);
            for (k, v) in layout::encode(&records).map_err(|e| corrupt("audit record", &e))? {
                batch.insert(&k.to_be_bytes(), v);
            }
        }
        self.audit.apply_batch(batch)?;
        self.flush_blocking()?;
        Ok(Some((first, head)))
    }

    /// The last audit record.
    pub fn audit_head(&self) -> Result<Option<Record>, StoreError> {
        self.audit_backwards().next().transpose()
    }

    /// Audit record `seq`, if stored.
    fn audit_get(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        let Some(item) = self.audit.range(..=seq.to_be_bytes()).next_back() else {
            return Ok(None);
        };
        for r in chunk(item) {
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
    pub fn audit_seek_time(&self, since_ms: u64) -> Result<u64, StoreError> {
        let Some(head) = self.audit_head()? else {
            return Ok(1);
        };
        let (mut lo, mut hi) = (1u64, head.seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(t) = self
                .audit_get(mid)
                .ok()
                .flatten()
                .and_then(|r| crate::audit::event::time_of(&r.payload))
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

    /// Audit records from `from_seq` on, in order, read lazily.
    pub fn audit_from(
        &self,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<Record, StoreError>> + Send + 'static {
        // The chunk holding `from_seq` starts at or before it. A failure to
        // find it is reported, not passed over (records would be skipped).
        let key = sled::IVec::from(&from_seq.to_be_bytes());
        let (start, failed) = match self.audit.range(..=key.clone()).next_back() {
            Some(Ok((k, _))) => (k, None),
            Some(Err(e)) => (key, Some(Err(StoreError::from(e)))),
            None => (key, None),
        };
        failed.into_iter().chain(
            self.audit
                .range(start..)
                .flat_map(chunk)
                .filter(move |r| r.as_ref().map_or(true, |r| r.seq >= from_seq)),
        )
    }
}

/// The records of one stored audit chunk (an error stands for them all).
fn chunk(item: Result<(sled::IVec, sled::IVec), sled::Error>) -> Vec<Result<Record, StoreError>> {
    let (k, v) = match item {
        Ok(kv) => kv,
        Err(e) => return vec![Err(e.into())],
    };
    match layout::decode(&v) {
        Ok(records) => records.into_iter().map(Ok).collect(),
        Err(e) => {
            let seq = <[u8; 8]>::try_from(&k[..])
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            vec![Err(corrupt(&format!("audit record {seq}"), &e))]
        }
    }
}

/// Records are JSON: readable with any sled tool after an incident, and
/// tolerant of fields added later.
fn put<T: serde::Serialize>(
    tree: &sled::Tree,
    key: &str,
    value: &T,
    what: &str,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| corrupt(what, &e.to_string()))?;
    tree.insert(key.as_bytes(), bytes)?;
    Ok(())
}

fn all<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|item| {
            let (k, v) = item?;
            serde_json::from_slice(&v).map_err(|e| {
                corrupt(
                    &format!("{what} {}", String::from_utf8_lossy(&k)),
                    &e.to_string(),
                )
            })
        })
        .collect()
}

fn corrupt(what: &str, detail: &str) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        detail: detail.to_owned(),
    }
}

/// Take the data directory's lock, recording our pid for the error message
/// a second process will print.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("infraveil.lock");
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Err(StoreError::Locked {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "infraveil-store-{name}-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn second_open_of_one_dir_is_refused_and_names_the_holder() {
        let dir = temp_dir("lock");
        let first = Store::open(&dir).unwrap();
        let e = Store::open(&dir).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("in use by another infraveil process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        // Released with the store.
        Store::open(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_are_created_once_and_survive_reopen() {
        let dir = temp_dir("key");
        let k = {
            let s = Store::open(&dir).unwrap();
            let k = s.key("salt").unwrap();
            assert_eq!(k, s.key("salt").unwrap());
            assert_ne!(k, s.key("other").unwrap());
            k
        };
        let s = Store::open(&dir).unwrap();
        assert_eq!(k, s.key("salt").unwrap());
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Chunks read in order from any seq, the head found, and an unsigned
    /// tail (forged records after the last signature, some in the same
    /// chunk as it) moved aside whole, leaving the log ending signed.
    #[test]
    fn audit_chunks_read_through_and_an_unsigned_tail_is_set_aside() {
        use crate::audit::chain;
        let dir = temp_dir("audit");
        let s = Store::open(&dir).unwrap();
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
        s.put_audit(layout::encode(&records[..200]).unwrap())
            .unwrap();
        s.put_audit(layout::encode(&records[200..]).unwrap())
            .unwrap();
        let all: Vec<_> = s.audit_from(0).map(Result::unwrap).collect();
        assert_eq!(all, records);
        for from in [1, 57, 200, 201, 399] {
            let first = s.audit_from(from).next().unwrap().unwrap();
            assert_eq!(first.seq, from);
        }
        assert_eq!(s.audit_head().unwrap().unwrap().seq, 400);
        assert_eq!(s.audit_get(333).unwrap().unwrap(), records[332]);
        assert_eq!(s.audit_unsigned_tail().unwrap(), Some((391, 400)));

        assert_eq!(s.audit_set_aside_unsigned_tail().unwrap(), Some((391, 400)));
        assert_eq!(s.audit_unsigned_tail().unwrap(), None);
        assert_eq!(s.audit_head().unwrap().unwrap().seq, 390);
        let kept: Vec<_> = s.audit_from(0).map(Result::unwrap).collect();
        assert_eq!(kept, records[..390]);
        let aside = s.db.open_tree(AUDIT_SET_ASIDE).unwrap();
        let moved: Vec<_> = aside
            .iter()
            .flat_map(|kv| layout::decode(&kv.unwrap().1).unwrap())
            .collect();
        assert_eq!(moved, records[390..]);
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
