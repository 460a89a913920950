//! Keeping this instance's view of approval requests (and approver
//! secrets) current when several instances share one control database: a
//! request made on A is decidable on B, and the session waiting on A goes
//! on when B decides. Changes arrive as notifications; a catch-up read
//! covers any that were missed.

use std::sync::Arc;

use super::{ApprovalRequest, Approvals, Entry, Status};
use crate::shutdown::Shutdown;
use crate::store::{Change, StoreError};

/// How far a request has come: a stale read never moves it back.
fn rank(s: Status) -> u8 {
    match s {
        Status::Pending => 0,
        Status::Approved => 1,
        _ => 2,
    }
}

impl Approvals {
    /// Take in a request as stored now (new, or changed here or elsewhere);
    /// a session waiting on it hears of a new status.
    pub(super) fn absorb(&self, req: ApprovalRequest) {
        let mut entries = self.lock();
        match entries.get_mut(&req.id) {
            Some(e) if rank(req.status) < rank(e.req.status) => {}
            Some(e) => {
                let changed = e.req.status != req.status;
                e.req = req;
                if changed {
                    e.tx.send_replace(e.req.status);
                }
            }
            None => {
                entries.insert(req.id.clone(), Entry::new(req));
            }
        }
    }

    /// Read what other instances changed since the last look (nothing to
    /// do for the embedded store).
    pub async fn sync(&self) -> Result<(), StoreError> {
        for r in self.table.changed().await? {
            self.absorb(r);
        }
        self.approvers.sync().await
    }

    /// Read request `id` as stored now, for a page or a decision that may
    /// be about a request another instance made a moment ago.
    pub async fn load(&self, id: &str) -> Result<(), StoreError> {
        if self.store.is_shared()
            && let Some((r, _)) = self.table.get(id).await?
        {
            self.absorb(r);
        }
        Ok(())
    }

    /// Follow other instances' changes until the firewall closes.
    pub async fn follow(self: Arc<Self>, shutdown: Shutdown) {
        let me = &self;
        self.store
            .follow("approvals", shutdown, |c| async move { me.apply(&c).await })
            .await;
    }

    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        if let Some(id) = self.table.is(change) {
            return self.load(id).await;
        }
        if let Some(id) = self.approvers.table().is(change) {
            if let Some((a, _)) = self.approvers.table().get(id).await? {
                self.approvers.absorb(a);
            }
            return Ok(());
        }
        if *change == Change::CatchUp {
            return self.sync().await;
        }
        Ok(())
    }
}
