//! The state store: the one owner of the firewall's state. Everything it
//! must not forget (grants, approvals, approver secrets, keys, the audit
//! log) lives here, in one of two backends behind one interface:
//!
//! - embedded (sled under `data_dir`, the default): one daemon, its
//!   directory locked to it;
//! - a PostgreSQL control database ([`control`]) several daemons share,
//!   each under its own instance name, with its own audit chain.
//!
//! Each domain opens its own [`Table`] (JSON documents by id, with a
//! revision for conditional updates) or [`Sequence`] (bytes in `u64` key
//! order, a log) and keeps its types to itself, so this module knows no
//! domain. What other instances change arrives as [`Change`]s.
//!
//! Embedded writes are durable only after [`Store::flush`]; control
//! database writes are durable when they return. Callers flush before they
//! tell anyone a change succeeded, which is right for both.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::config::{StateBackend, StateConfig};
use crate::shutdown::{Phase, Shutdown};

mod control;
mod embedded;
mod migrations;
mod sequence;

pub use sequence::{Chunk, Entry, Sequence};

const META: &str = "meta";
/// The name the embedded store's one chain goes by.
const LOCAL: &str = "local";
/// Attempts of a conditional update before giving up on a hot document.
const SWAP_ATTEMPTS: usize = 32;

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
    #[error("control database: {0}")]
    Control(String),
    #[error(
        "instance name {instance:?} is held by another live infraveil on this control database; \
         give this daemon its own [state] instance"
    )]
    InstanceInUse { instance: String },
    #[error(
        "instance {instance:?} has an audit chain signed with key {stored}, but this daemon's key is {ours}: \
         its records would no longer verify. Start it with the instance's key ([audit] key_file), or give it a new [state] instance"
    )]
    KeyChanged {
        instance: String,
        stored: String,
        ours: String,
    },
    #[error("{0} is not possible with the control database backend")]
    Unsupported(&'static str),
    #[error("{what} {id} changed {SWAP_ATTEMPTS} times while being updated; try again")]
    Contended { what: &'static str, id: String },
}

/// What changed in the store, as another instance (or this one) wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Document `id` of `table`.
    Row { table: String, id: String },
    /// Notifications may have been missed (a connection was lost, or it is
    /// time for the periodic sweep): read what changed.
    CatchUp,
}

/// The open store. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Backend,
    faults: Faults,
    dir: PathBuf,
    changes: broadcast::Sender<Change>,
}

enum Backend {
    Embedded(embedded::Embedded),
    Control(Arc<control::Control>),
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
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("instance", &self.instance())
            .finish()
    }
}

impl Store {
    /// Open (creating if needed) the embedded store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, Faults::default())
    }

    /// [`Store::open`] with a [`Faults`] switch.
    pub fn open_with(data_dir: &Path, faults: Faults) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Embedded(embedded::Embedded::open(data_dir)?),
            faults,
            dir: data_dir.to_owned(),
            changes: broadcast::channel(1024).0,
        })
    }

    /// Open the store `[state]` names: embedded under `data_dir`, or the
    /// control database (migrated, and this instance's name taken).
    pub async fn open_config(
        state: &StateConfig,
        data_dir: &Path,
        faults: Faults,
    ) -> Result<Store, StoreError> {
        match state.backend {
            StateBackend::Sled => Store::open_with(data_dir, faults),
            StateBackend::Postgres => {
                // The audit signing key still lives in data_dir.
                let io = |source| StoreError::Io {
                    path: data_dir.to_owned(),
                    source,
                };
                std::fs::create_dir_all(data_dir).map_err(io)?;
                std::fs::set_permissions(
                    data_dir,
                    <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
                )
                .map_err(io)?;
                let changes = broadcast::channel(4096).0;
                let control = control::Control::open(state, changes.clone()).await?;
                tracing::info!(
                    instance = control.instance(),
                    server_version = %control.version().await.unwrap_or_default(),
                    "state in the control database"
                );
                Ok(Store {
                    backend: Backend::Control(control),
                    faults,
                    dir: data_dir.to_owned(),
                    changes,
                })
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This daemon's name in the store (`local` for the embedded one).
    pub fn instance(&self) -> &str {
        match &self.backend {
            Backend::Embedded(_) => LOCAL,
            Backend::Control(c) => c.instance(),
        }
    }

    /// Whether other daemons share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Control(_))
    }

    /// Whether the store can be written now. The embedded one always can
    /// (until a write fails); the control database while this instance's
    /// connection to it holds its name.
    pub fn available(&self) -> bool {
        match &self.backend {
            Backend::Embedded(_) => true,
            Backend::Control(c) => c.available(),
        }
    }

    /// Hand each change other instances make to `apply` until the
    /// firewall closes (a stretch this instance fell behind on arrives as
    /// [`Change::CatchUp`]). Returns at once for the embedded store, which
    /// only this daemon writes. `what` names the state in warnings.
    pub async fn follow<F, Fut>(&self, what: &'static str, mut shutdown: Shutdown, mut apply: F)
    where
        F: FnMut(Change) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        if !self.is_shared() {
            return;
        }
        let mut changes = self.changes.subscribe();
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = shutdown.reached(Phase::Closing) => return,
            };
            let change = match change {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(_)) => Change::CatchUp,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(e) = apply(change).await {
                tracing::warn!(error = %e, what, "could not read what changed elsewhere; the next catch-up tries again");
            }
        }
    }

    /// Make every write so far durable. Call before telling a user that a
    /// change succeeded; concurrent callers share one fsync.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.faults.check()?;
        match &self.backend {
            Backend::Embedded(e) => {
                // On a blocking thread of our own rather than sled's
                // `flush_async`, which hands the flush to sled's IO pool
                // with a wake-up of all seven of its idle threads (a third
                // of the daemon's CPU under TPC-B in profiles).
                let db = e.db.clone();
                match tokio::task::spawn_blocking(move || db.flush()).await {
                    Ok(r) => r.map(|_| ()).map_err(StoreError::from),
                    // The flush panicked or the runtime is shutting down.
                    Err(e) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                        e.to_string(),
                    )))),
                }
            }
            // Each write committed on its own.
            Backend::Control(_) => Ok(()),
        }
    }

    /// [`Store::flush`] for code outside an async context.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.faults.check()?;
        if let Backend::Embedded(e) = &self.backend {
            e.db.flush()?;
        }
        Ok(())
    }

    /// A random 32-byte key, created on first use and kept for the life of
    /// the store (e.g. the key that derives SCRAM salts), the same for
    /// every instance sharing it.
    pub async fn key(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("key/{name}");
        let fresh: [u8; 32] = rand::random();
        let stored = match &self.backend {
            Backend::Embedded(e) => {
                // Compare-and-swap so two callers racing on first use agree.
                let _ = e.meta.compare_and_swap(
                    key.as_bytes(),
                    None as Option<&[u8]>,
                    Some(&fresh[..]),
                )?;
                let stored = e
                    .meta
                    .get(key.as_bytes())?
                    .ok_or_else(|| corrupt(&key, "vanished after being written"))?;
                self.flush().await?;
                stored.to_vec()
            }
            Backend::Control(c) => c.key(&key, &fresh).await?,
        };
        stored
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(&key, "is not 32 bytes"))
    }

    /// The table `name` of JSON values of type `T` keyed by id; `what`
    /// names a value in errors ("grant").
    pub fn table<T>(&self, name: &str, what: &'static str) -> Result<Table<T>, StoreError> {
        let inner = match &self.backend {
            Backend::Embedded(e) => Docs::Embedded(e.db.open_tree(name)?),
            Backend::Control(c) => Docs::Control {
                control: c.clone(),
                table: name.into(),
            },
        };
        Ok(Table {
            inner,
            what,
            faults: self.faults.clone(),
            cursor: Arc::new(Mutex::new(None)),
            _values: PhantomData,
        })
    }

    /// This instance's sequence `name` (a log): a tree of the embedded
    /// store, or, in the control database, this instance's audit chain.
    pub fn sequence(&self, name: &str) -> Result<Sequence, StoreError> {
        match &self.backend {
            Backend::Embedded(e) => Ok(Sequence::embedded(
                e.db.open_tree(name)?,
                self.faults.clone(),
            )),
            Backend::Control(c) if name == "audit" => Ok(Sequence::control(
                c.clone(),
                c.instance().into(),
                self.faults.clone(),
            )),
            Backend::Control(_) => Err(StoreError::Unsupported("a second sequence")),
        }
    }

    /// Every instance's audit chain. Blocking: call off the async workers.
    pub fn chains(&self, name: &str) -> Result<Vec<Chain>, StoreError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(vec![Chain {
                instance: LOCAL.to_owned(),
                public_key: None,
                head: None,
                records: self.sequence(name)?,
            }]),
            Backend::Control(c) => Ok(c
                .block(c.chains())?
                .into_iter()
                .map(|(instance, public_key, head)| Chain {
                    records: Sequence::control(
                        c.clone(),
                        instance.as_str().into(),
                        self.faults.clone(),
                    ),
                    instance,
                    public_key,
                    head,
                })
                .collect()),
        }
    }

    /// Say which key signs this instance's chain; refused if its records
    /// were signed with another.
    pub async fn register_chain(&self, public_key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            Backend::Control(c) => c.register(public_key).await,
        }
    }
}

/// One instance's audit chain, as [`Store::chains`] lists it.
pub struct Chain {
    pub instance: String,
    /// The key it registered (none for the embedded store, whose key is
    /// the daemon's; none for a chain stored without a registration).
    pub public_key: Option<String>,
    /// The last record its instance says it stored (seq, hex hash): a
    /// chain that ends before it was cut.
    pub head: Option<(u64, String)>,
    pub records: Sequence,
}

/// A table of `T`s stored as JSON under string ids. Cheap to clone.
pub struct Table<T> {
    inner: Docs,
    what: &'static str,
    faults: Faults,
    /// Where [`Table::changed`] reads on from (control database).
    cursor: Arc<Mutex<Option<String>>>,
    _values: PhantomData<fn() -> T>,
}

#[derive(Clone)]
enum Docs {
    Embedded(sled::Tree),
    Control {
        control: Arc<control::Control>,
        table: Arc<str>,
    },
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            inner: self.inner.clone(),
            what: self.what,
            faults: self.faults.clone(),
            cursor: self.cursor.clone(),
            _values: PhantomData,
        }
    }
}

/// A document's revision, for [`Table::swap`].
#[derive(Clone)]
pub struct Rev(RevInner);

#[derive(Clone)]
enum RevInner {
    /// The bytes stored (sled compares them).
    Bytes(sled::IVec),
    Number(i64),
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Table<T> {
    fn encode(&self, value: &T) -> Result<String, StoreError> {
        serde_json::to_string(value).map_err(|e| corrupt(self.what, &e.to_string()))
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| corrupt(&format!("{} {id}", self.what), &e.to_string()))
    }

    /// Insert or replace the value under `id` (embedded: not yet durable,
    /// see [`Store::flush`]).
    pub async fn put(&self, id: &str, value: &T) -> Result<(), StoreError> {
        self.faults.check()?;
        let doc = self.encode(value)?;
        match &self.inner {
            Docs::Embedded(tree) => {
                tree.insert(id.as_bytes(), doc.as_bytes())?;
                Ok(())
            }
            Docs::Control { control, table } => control.put(table, id, &doc).await,
        }
    }

    /// The value under `id` and its revision.
    pub async fn get(&self, id: &str) -> Result<Option<(T, Rev)>, StoreError> {
        match &self.inner {
            Docs::Embedded(tree) => match tree.get(id.as_bytes())? {
                Some(b) => Ok(Some((self.decode(id, &b)?, Rev(RevInner::Bytes(b))))),
                None => Ok(None),
            },
            Docs::Control { control, table } => match control.get(table, id).await? {
                Some((doc, rev)) => Ok(Some((
                    self.decode(id, doc.as_bytes())?,
                    Rev(RevInner::Number(rev)),
                ))),
                None => Ok(None),
            },
        }
    }

    /// Replace the value under `id` if it is still at `rev`; false if
    /// someone changed it first. (Embedded: not yet durable.)
    pub async fn swap(&self, id: &str, rev: &Rev, value: &T) -> Result<bool, StoreError> {
        self.faults.check()?;
        let doc = self.encode(value)?;
        match (&self.inner, &rev.0) {
            (Docs::Embedded(tree), RevInner::Bytes(old)) => Ok(tree
                .compare_and_swap(id.as_bytes(), Some(old), Some(doc.as_bytes()))?
                .is_ok()),
            (Docs::Control { control, table }, RevInner::Number(n)) => {
                control.swap(table, id, *n, &doc).await
            }
            _ => Err(corrupt(self.what, "revision from another store")),
        }
    }

    /// Change the value under `id` with `change`, applied to what is stored
    /// now and written only if nobody changed it meanwhile (else applied
    /// again to the newer value). `change` may refuse with an error, and
    /// then nothing is written. `None` if there is no such value.
    pub async fn modify<E: From<StoreError>>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut T) -> Result<(), E>,
    ) -> Result<Option<T>, E> {
        for _ in 0..SWAP_ATTEMPTS {
            let Some((mut value, rev)) = self.get(id).await? else {
                return Ok(None);
            };
            change(&mut value)?;
            if self.swap(id, &rev, &value).await? {
                return Ok(Some(value));
            }
        }
        Err(StoreError::Contended {
            what: self.what,
            id: id.to_owned(),
        }
        .into())
    }

    /// Every value, in id order.
    pub async fn all(&self) -> Result<Vec<T>, StoreError> {
        match &self.inner {
            Docs::Embedded(tree) => self.all_embedded(tree),
            Docs::Control { control, table } => {
                let (cursor, docs) = control.changed(table, None).await?;
                *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor);
                docs.iter()
                    .map(|d| self.decode("(all)", d.as_bytes()))
                    .collect()
            }
        }
    }

    /// [`Table::all`] off the async workers (`spawn_blocking`).
    pub fn all_blocking(&self) -> Result<Vec<T>, StoreError> {
        match &self.inner {
            Docs::Embedded(tree) => self.all_embedded(tree),
            Docs::Control { control, .. } => control.clone().block(self.all()),
        }
    }

    fn all_embedded(&self, tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
        tree.iter()
            .map(|item| {
                let (k, v) = item?;
                self.decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// Values written since the last [`Table::all`] or `changed` through
    /// this table (or a clone), perhaps with some seen before: what other
    /// instances changed. Nothing for the embedded store, which only this
    /// daemon writes.
    pub async fn changed(&self) -> Result<Vec<T>, StoreError> {
        let Docs::Control { control, table } = &self.inner else {
            return Ok(Vec::new());
        };
        let since = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (cursor, docs) = control.changed(table, since.as_deref()).await?;
        let values = docs
            .iter()
            .map(|d| self.decode("(changed)", d.as_bytes()))
            .collect::<Result<Vec<T>, _>>()?;
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor);
        Ok(values)
    }

    /// Whether `change` is about this table.
    pub fn is<'c>(&self, change: &'c Change) -> Option<&'c str> {
        match (change, &self.inner) {
            (Change::Row { table: t, id }, Docs::Control { table, .. }) if **t == **table => {
                Some(id)
            }
            _ => None,
        }
    }
}

impl StoreError {
    /// The store holds something unreadable: `what`, and why.
    pub fn corrupt(what: &str, detail: &str) -> StoreError {
        StoreError::Corrupt {
            what: what.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

fn corrupt(what: &str, detail: &str) -> StoreError {
    StoreError::corrupt(what, detail)
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

    #[tokio::test]
    async fn keys_are_created_once_and_survive_reopen() {
        let dir = temp_dir("key");
        let k = {
            let s = Store::open(&dir).unwrap();
            let k = s.key("salt").await.unwrap();
            assert_eq!(k, s.key("salt").await.unwrap());
            assert_ne!(k, s.key("other").await.unwrap());
            k
        };
        let s = Store::open(&dir).unwrap();
        assert_eq!(k, s.key("salt").await.unwrap());
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
