//! A [`Sequence`]: byte values under `u64` keys, read in key order (the
//! audit log's chunks). Embedded, a sled tree (keys big-endian, so sled's
//! order is the numbers'); in the control database, one instance's chain,
//! read a page at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use super::control::{Control, PAGE};
use super::{Faults, StoreError, corrupt};

/// The bytes of one entry, as whichever backend holds them.
#[derive(Debug, Clone)]
pub enum Chunk {
    Sled(sled::IVec),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Sled(v) => v,
            Chunk::Owned(v) => v,
        }
    }
}

/// One entry of a [`Sequence`].
pub type Entry = (u64, Chunk);

/// Cheap to clone.
#[derive(Clone)]
pub struct Sequence {
    inner: Inner,
    faults: Faults,
}

#[derive(Clone)]
enum Inner {
    Embedded(sled::Tree),
    Control {
        control: Arc<Control>,
        chain: Arc<str>,
    },
}

impl Sequence {
    pub(super) fn embedded(tree: sled::Tree, faults: Faults) -> Sequence {
        Sequence {
            inner: Inner::Embedded(tree),
            faults,
        }
    }

    pub(super) fn control(control: Arc<Control>, chain: Arc<str>, faults: Faults) -> Sequence {
        Sequence {
            inner: Inner::Control { control, chain },
            faults,
        }
    }

    /// Append entries atomically: embedded, not yet durable (see
    /// `Store::flush`); in the control database, committed, with `head`
    /// (seq, hex hash of the last record) as the chain's registered head.
    pub async fn append(
        &self,
        entries: &[(u64, Vec<u8>)],
        head: (u64, &str),
    ) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Embedded(tree) => {
                self.faults.check()?;
                let mut batch = sled::Batch::default();
                for (k, bytes) in entries {
                    batch.insert(&k.to_be_bytes(), bytes.as_slice());
                }
                tree.apply_batch(batch)?;
                Ok(())
            }
            Inner::Control { control, .. } => {
                self.faults.check()?;
                control.append(entries, head).await
            }
        }
    }

    /// Insert the entries atomically (embedded only; not yet durable).
    pub fn insert(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.replace(&[], entries)
    }

    /// Remove `keys` and insert `entries`, in one atomic batch: a crash
    /// midway leaves all of it or none. Embedded only: a chain in the
    /// control database is never rewritten.
    pub fn replace(&self, keys: &[u64], entries: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.faults.check()?;
        let Inner::Embedded(tree) = &self.inner else {
            return Err(StoreError::Unsupported("rewriting an audit chain"));
        };
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(&k.to_be_bytes());
        }
        for (k, bytes) in entries {
            batch.insert(&k.to_be_bytes(), bytes);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// The entry with the greatest key at or below `key`. Blocking in the
    /// control database: call off the async workers.
    pub fn at_or_before(&self, key: u64) -> Result<Option<Entry>, StoreError> {
        match &self.inner {
            Inner::Embedded(tree) => tree
                .range(..=key.to_be_bytes())
                .next_back()
                .map(entry)
                .transpose(),
            Inner::Control { control, chain } => Ok(control
                .block(control.chunks(chain, key, false, 1))?
                .into_iter()
                .next()
                .map(|(k, v)| (k, Chunk::Owned(v)))),
        }
    }

    /// Entries from `key` on, in order, read lazily.
    pub fn from(
        &self,
        key: u64,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send + 'static> {
        match &self.inner {
            Inner::Embedded(tree) => Box::new(tree.range(key.to_be_bytes()..).map(entry)),
            Inner::Control { control, chain } => Box::new(Pages {
                control: control.clone(),
                chain: chain.clone(),
                next: Some(key),
                forward: true,
                buf: VecDeque::new(),
            }),
        }
    }

    /// Entries from the last backwards.
    pub fn backwards(
        &self,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send + 'static> {
        match &self.inner {
            Inner::Embedded(tree) => Box::new(tree.iter().rev().map(entry)),
            Inner::Control { control, chain } => Box::new(Pages {
                control: control.clone(),
                chain: chain.clone(),
                next: Some(u64::MAX),
                forward: false,
                buf: VecDeque::new(),
            }),
        }
    }
}

/// A chain read from the control database a page at a time.
struct Pages {
    control: Arc<Control>,
    chain: Arc<str>,
    /// The key the next page starts at; `None` once the end is reached.
    next: Option<u64>,
    forward: bool,
    buf: VecDeque<Entry>,
}

impl Iterator for Pages {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            let key = self.next?;
            let page =
                match self
                    .control
                    .block(self.control.chunks(&self.chain, key, self.forward, PAGE))
                {
                    Ok(p) => p,
                    Err(e) => {
                        self.next = None;
                        return Some(Err(e));
                    }
                };
            self.next = match page.last() {
                _ if (page.len() as i64) < PAGE => None,
                Some((k, _)) if self.forward => k.checked_add(1),
                Some((k, _)) => k.checked_sub(1),
                None => None,
            };
            self.buf
                .extend(page.into_iter().map(|(k, v)| (k, Chunk::Owned(v))));
        }
        self.buf.pop_front().map(Ok)
    }
}

fn entry(item: Result<(sled::IVec, sled::IVec), sled::Error>) -> Result<Entry, StoreError> {
    let (k, v) = item?;
    let key = <[u8; 8]>::try_from(&k[..])
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("sequence key", &format!("{} bytes, not 8", k.len())))?;
    Ok((key, Chunk::Sled(v)))
}
