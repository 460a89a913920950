//! Keeping this instance's grants current when several instances share
//! one control database: a grant issued or revoked on one is known on the
//! others within moments (notifications, and a catch-up read for any that
//! were missed), and their sweepers end its sessions.

use std::sync::Arc;

use super::Grants;
use crate::shutdown::Shutdown;
use crate::store::{Change, StoreError};

impl Grants {
    /// Read what other instances changed since the last look (nothing to
    /// do for the embedded store).
    pub async fn sync(&self) -> Result<(), StoreError> {
        for g in self.table.changed().await? {
            self.index().absorb(g);
        }
        Ok(())
    }

    /// Follow other instances' changes until the firewall closes: a grant
    /// issued or revoked anywhere is known here within moments, and the
    /// sweeper ends its sessions.
    pub async fn follow(self: Arc<Self>, shutdown: Shutdown) {
        let me = &self;
        self.store
            .follow("grants", shutdown, |c| async move { me.apply(&c).await })
            .await;
    }

    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        match self.table.is(change) {
            Some(id) => {
                if let Some((g, _)) = self.table.get(id).await? {
                    self.index().absorb(g);
                }
                Ok(())
            }
            None if *change == Change::CatchUp => self.sync().await,
            None => Ok(()),
        }
    }
}
