//! Live sessions: the firewall-issued cancel keys (mapped to the real upstream
//! backend) and a control channel per session, so a cancel request, a grant
//! revocation or shutdown can reach the right connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::state::SessionState;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, mpsc};

use crate::protocol::PgError;

/// A message to a running session.
#[derive(Debug)]
pub enum Control {
    /// Send this FATAL error to the client and close the session.
    Terminate(PgError),
}

#[derive(Debug)]
struct Entry {
    key: i32,
    upstream_pid: i32,
    upstream_key: i32,
    credential_id: String,
    control: mpsc::Sender<Control>,
    /// Woken by a cancel request, for a session waiting on an approval.
    cancel: Arc<Notify>,
    /// Already told to end; not told again.
    ending: bool,
    /// Its prepared statements and portals, as the firewall models them.
    model: Arc<SessionState>,
}

/// Sessions by the process id we reported to their client.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    sessions: Mutex<HashMap<i32, Entry>>,
}

/// Removes the session from the registry when dropped.
pub struct Registration<'a> {
    registry: &'a Registry,
    pub pid: i32,
    pub key: i32,
    /// Notified when the client sends a valid cancel request.
    pub cancel: Arc<Notify>,
    pub model: Arc<SessionState>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session id (also used in logs).
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Register a session; returns the (pid, key) to give its client.
    pub fn register(
        &self,
        upstream_pid: i32,
        upstream_key: i32,
        credential_id: &str,
        control: mpsc::Sender<Control>,
        model: Arc<SessionState>,
    ) -> Registration<'_> {
        let mut map = self.lock();
        let (pid, key) = loop {
            // Positive, like real pids; random so they reveal nothing.
            let pid = (rand::random::<u32>() >> 1) as i32;
            if pid != 0 && !map.contains_key(&pid) {
                break (pid, rand::random::<i32>());
            }
        };
        let cancel = Arc::new(Notify::new());
        map.insert(
            pid,
            Entry {
                key,
                upstream_pid,
                upstream_key,
                credential_id: credential_id.to_owned(),
                control,
                cancel: cancel.clone(),
                ending: false,
                model: model.clone(),
            },
        );
        Registration {
            registry: self,
            pid,
            key,
            cancel,
            model,
        }
    }

    /// The named prepared statements and portals of the session whose
    /// client was given `pid`, as the firewall models them (sorted; the
    /// unnamed ones left out), for diagnostics and tests.
    pub fn names(&self, pid: i32) -> Option<(Vec<String>, Vec<String>)> {
        let model = self.lock().get(&pid)?.model.clone();
        let (mut statements, mut portals) = model.names();
        statements.retain(|n| !n.is_empty());
        portals.retain(|n| !n.is_empty());
        Some((statements, portals))
    }

    /// The upstream (pid, key) for a client's cancel request, if its key is
    /// right (which also wakes a session waiting for approval). The key is
    /// compared in constant time.
    pub fn cancel_target(&self, pid: i32, key: i32) -> Option<(i32, i32)> {
        let map = self.lock();
        let e = map.get(&pid)?;
        if bool::from(e.key.to_be_bytes().ct_eq(&key.to_be_bytes())) {
            // Only a session waiting right now is woken; no permit is kept
            // for a later wait.
            e.cancel.notify_waiters();
            Some((e.upstream_pid, e.upstream_key))
        } else {
            None
        }
    }

    /// Tell every session using `credential_id` to end with `error`.
    /// Returns how many sessions were told.
    pub fn terminate_credential(&self, credential_id: &str, error: &PgError) -> usize {
        self.end_sessions(|c| (c == credential_id).then(|| error.clone()))
    }

    /// Tell each session for whose credential `verdict` returns an error to
    /// end with it (once per session). Returns how many sessions were told.
    pub fn end_sessions(&self, verdict: impl Fn(&str) -> Option<PgError>) -> usize {
        let mut map = self.lock();
        let mut n = 0;
        for e in map.values_mut().filter(|e| !e.ending) {
            let Some(error) = verdict(&e.credential_id) else {
                continue;
            };
            // A full channel means the session is already being told
            // something; it is ending either way.
            let _ = e.control.try_send(Control::Terminate(error));
            e.ending = true;
            n += 1;
        }
        n
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
