//! The state store: the one owner of sled. Everything the firewall must not
//! forget lives under `data_dir`; each domain opens its own tree here (a
//! [`Table`] of JSON values, or a [`Sequence`] of bytes in key order) and
//! keeps its types to itself, so this module knows no domain.
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

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const META: &str = "meta";

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
/// concurrent. Each domain opens its own tree ([`Store::table`],
/// [`Store::sequence`]) and keeps its types to itself.
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    faults: Faults,
    dir: PathBuf,
    // Held for the life of the store; the OS drops the lock with the file.
    _lock: File,
}

/// A switch that makes every write and flush of a store fail, as a full or
/// failing disk would: how tests prove the firewall fails closed. Off
/// unless someone holding a clone turns it on.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<AtomicBool>);

impl Faults {
    /// From now on, writes and flushes fail (or, with `false`, work again).
    pub fn fail_writes(&self, fail: bool) {
        self.0.store(fail, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::Relaxed) {
            Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                "writes fail (fault injected)",
            ))))
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Open (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, Faults::default())
    }

    /// [`Store::open`] with a [`Faults`] switch.
    pub fn open_with(data_dir: &Path, faults: Faults) -> Result<Store, StoreError> {
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
        let meta = db.open_tree(META)?;
        Ok(Store {
            db,
            meta,
            faults,
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
        self.faults.check()?;
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
        self.faults.check()?;
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

    /// The tree `name` of JSON values of type `T` keyed by id; `what`
    /// names a value in errors ("grant").
    pub fn table<T>(&self, name: &str, what: &'static str) -> Result<Table<T>, StoreError> {
        Ok(Table {
            tree: self.db.open_tree(name)?,
            what,
            faults: self.faults.clone(),
            _values: PhantomData,
        })
    }

    /// The tree `name` of byte values in `u64` key order (a log).
    pub fn sequence(&self, name: &str) -> Result<Sequence, StoreError> {
        Ok(Sequence {
            tree: self.db.open_tree(name)?,
            faults: self.faults.clone(),
        })
    }
}

/// A tree of `T`s stored as JSON under string ids. Cheap to clone.
pub struct Table<T> {
    tree: sled::Tree,
    what: &'static str,
    faults: Faults,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            tree: self.tree.clone(),
            what: self.what,
            faults: self.faults.clone(),
            _values: PhantomData,
        }
    }
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Table<T> {
    /// Insert or replace the value under `id` (not yet durable: see
    /// [`Store::flush`]).
    pub fn put(&self, id: &str, value: &T) -> Result<(), StoreError> {
        self.faults.check()?;
        put(&self.tree, id, value, self.what)
    }

    /// Every value, in id order.
    pub fn all(&self) -> Result<Vec<T>, StoreError> {
        all(&self.tree, self.what)
    }
}

/// Bytes under `u64` keys, iterated in key order (stored big-endian, so
/// sled's order is the numbers'). Cheap to clone.
#[derive(Clone)]
pub struct Sequence {
    tree: sled::Tree,
    faults: Faults,
}

/// One entry of a [`Sequence`].
pub type Entry = (u64, sled::IVec);

impl Sequence {
    /// Insert the entries atomically (not yet durable).
    pub fn insert(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.replace(&[], entries)
    }

    /// Remove `keys` and insert `entries`, in one atomic batch: a crash
    /// midway leaves all of it or none.
    pub fn replace(&self, keys: &[u64], entries: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.faults.check()?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(&k.to_be_bytes());
        }
        for (k, bytes) in entries {
            batch.insert(&k.to_be_bytes(), bytes);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The entry with the greatest key at or below `key`.
    pub fn at_or_before(&self, key: u64) -> Result<Option<Entry>, StoreError> {
        self.tree
            .range(..=key.to_be_bytes())
            .next_back()
            .map(entry)
            .transpose()
    }

    /// Entries from `key` on, in order, read lazily.
    pub fn from(
        &self,
        key: u64,
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + Send + 'static {
        self.tree.range(key.to_be_bytes()..).map(entry)
    }

    /// Entries from the last backwards.
    pub fn backwards(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + Send + 'static {
        self.tree.iter().rev().map(entry)
    }
}

fn entry(item: Result<(sled::IVec, sled::IVec), sled::Error>) -> Result<Entry, StoreError> {
    let (k, v) = item?;
    let key = <[u8; 8]>::try_from(&k[..])
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("sequence key", &format!("{} bytes, not 8", k.len())))?;
    Ok((key, v))
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
}
