//! How a request ends without a decision: its session went away, or it
//! expired. Of several instances trying at once, exactly one ends it (a
//! conditional update), and that one tells the approvers and the log.

use super::{ApprovalError, Approvals, Status};
use crate::audit::Event;
use crate::time::now_ms;

impl Approvals {
    /// The waiting client went away or gave up: a pending request is
    /// cancelled (an already decided one is left as it is). The change is
    /// stored from a task, so this can be called from `Drop`.
    pub fn cancel(&self, id: &str, why: &str) {
        let pending = self
            .lock()
            .get(id)
            .is_some_and(|e| e.req.status == Status::Pending);
        let (Some(me), Ok(rt)) = (self.this.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        if !pending {
            return;
        }
        let (id, why) = (id.to_owned(), why.to_owned());
        rt.spawn(async move {
            me.end_pending(&id, Status::Cancelled, Some(why)).await;
        });
    }

    /// [`Approvals::cancel`], waiting until it is stored.
    pub async fn cancel_now(&self, id: &str, why: &str) {
        self.end_pending(id, Status::Cancelled, Some(why.to_owned()))
            .await;
    }

    /// Move a pending (or, to expire it, approved) request to `status`, if
    /// it is still so when stored: tell the waiting session, the approvers
    /// and the log. Of several instances trying, one does.
    async fn end_pending(&self, id: &str, status: Status, why: Option<String>) -> bool {
        let now = now_ms();
        let ended = self
            .table
            .modify(id, |r| {
                let due = match status {
                    Status::Expired => {
                        matches!(r.status, Status::Pending | Status::Approved)
                            && r.expires_at <= now
                    }
                    _ => r.status == Status::Pending,
                };
                if !due {
                    return Err(ApprovalError::Decided {
                        id: id.to_owned(),
                        status: r.status.as_str(),
                    });
                }
                r.status = status;
                if why.is_some() {
                    r.note = why.clone();
                }
                Ok(())
            })
            .await;
        match ended {
            Ok(Some(r)) => {
                self.absorb(r);
                if let Some(e) = self.lock().get_mut(id) {
                    self.follow_up(e);
                }
                self.audit.enqueue_now(Event::ApprovalDecided {
                    approval: id.to_owned(),
                    status: status.as_str().into(),
                    by: None,
                    via: None,
                    note: why.clone(),
                });
                tracing::info!(approval = %id, status = status.as_str(), why, "approval request ended");
                true
            }
            Ok(None) | Err(ApprovalError::Decided { .. }) => false,
            Err(e) => {
                tracing::warn!(approval = %id, error = %e, "could not store the end of an approval request");
                false
            }
        }
    }

    /// Expire pending and approved-but-unused requests past their time.
    pub async fn expire_due(&self) -> usize {
        let now = now_ms();
        let due: Vec<String> = self
            .lock()
            .values()
            .filter(|e| {
                matches!(e.req.status, Status::Pending | Status::Approved)
                    && e.req.expires_at <= now
            })
            .map(|e| e.req.id.clone())
            .collect();
        let mut n = 0;
        for id in due {
            if self.end_pending(&id, Status::Expired, None).await {
                n += 1;
            }
        }
        n
    }
}
