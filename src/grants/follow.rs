//! Keeping this instance's grants current when several instances share
//! one control database: a grant issued or revoked on one is known on the
//! others within moments (notifications, and a catch-up read for any that
//! were missed), and their sweepers end its sessions.

use std::sync::Arc;

use super::Grants;
use crate::store::StoreError;

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
    pub async fn follow(self: Arc<Self>, mut shutdown: crate::shutdown::Shutdown) {
        if !self.store.is_shared() {
            return;
        }
        let mut changes = self.store.changes();
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = shutdown.reached(crate::shutdown::Phase::Closing) => return,
            };
            let result = match change {
                Ok(c) => match self.table.is(&c) {
                    Some(id) => match self.table.get(id).await {
                        Ok(Some((g, _))) => {
                            self.index().absorb(g);
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    },
                    None if c == crate::store::Change::CatchUp => self.sync().await,
                    None => Ok(()),
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.sync().await,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not read grants changed elsewhere; the next sweep tries again");
            }
        }
    }
}
