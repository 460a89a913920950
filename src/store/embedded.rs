//! The embedded backend: sled under `data_dir`, for one daemon. The
//! directory is locked to the process that opened it (`infraveil.lock`),
//! so a second daemon fails with a clear message instead of two writers
//! corrupting the store.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::StoreError;

/// sled and the lock that makes it this process's.
pub(super) struct Embedded {
    pub(super) db: sled::Db,
    pub(super) meta: sled::Tree,
    // Held for the life of the store; the OS drops the lock with the file.
    _lock: File,
}

impl Embedded {
    pub(super) fn open(data_dir: &Path) -> Result<Embedded, StoreError> {
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
        let meta = db.open_tree(super::META)?;
        Ok(Embedded {
            db,
            meta,
            _lock: lock,
        })
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
