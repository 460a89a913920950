//! The session side of approvals: what happens to a statement the policy
//! holds. The relay has already sent everything before it upstream; this
//! decides whether the held message itself goes on.
//!
//! - `defer`: an approved, unused request for exactly this binding
//!   (identity, role, database, upstream user, text and parameter values)
//!   lets it run (once). Otherwise the client is refused at once with the
//!   request's id and link, creating the request if none is pending.
//! - `wait`: a request approved beforehand for exactly this binding (a
//!   proposal, see [`Gate::propose`]) lets it run once. Otherwise a request
//!   is created and the session blocks (only this one) until an approver
//!   decides, the request expires, the client cancels (CancelRequest) or
//!   disconnects, or the session is ended.
//!
//! Outside any session, [`Gate::propose`] creates (or finds) the pending
//! request for a statement without running it (the admin API's `/v1/self`,
//! for agents): in `defer` semantics, whatever the role's mode.

use std::sync::Arc;

use tokio::io::AsyncRead;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Shared;
use crate::approvals::{ApprovalError, ApprovalView, Approvals, Binding, NewRequest, Status};
use crate::auth::CredentialSource;
use crate::policy::inspect::{Held, SessionInfo};
use crate::policy::{ApprovalMode, PolicySet};
use crate::protocol::{FrameReader, PgError};
use crate::upstream::UpstreamConnector;

/// What to do with the held message.
pub enum Outcome {
    /// Approved (this request): forward it.
    Run(String),
    /// Refuse it with this error.
    Refuse(PgError),
    /// The client disconnected while waiting.
    ClientGone,
}

/// What is held: a statement's text and, for a prepared statement, the
/// parameter values of its `Bind` (bound into the approval and shown).
pub struct Asked<'a> {
    pub sql: &'a str,
    /// The parameter types the statement was prepared with (OIDs).
    pub types: &'a [u32],
    pub values: crate::approvals::Values<'a>,
}

/// What holding a statement needs of the firewall, and nothing more.
pub struct Gate<'a> {
    pub approvals: &'a Arc<Approvals>,
    /// For the preview, which logs in as the role's upstream user.
    pub upstream: &'a UpstreamConnector,
    /// For the grant's reason, shown to approvers.
    pub credentials: &'a dyn CredentialSource,
    pub policies: Arc<PolicySet>,
    /// How much a waiting client may send before it stops being read.
    pub max_message_bytes: usize,
}

impl<'a> Gate<'a> {
    /// The firewall's gate; `None` without an admin API, where approvals
    /// would be decided.
    pub fn of(shared: &'a Shared) -> Option<Gate<'a>> {
        Some(Gate {
            approvals: shared.approvals.as_ref()?,
            upstream: &shared.upstream,
            credentials: shared.credentials.as_ref(),
            policies: shared.policies(),
            max_message_bytes: shared.limits.max_message_bytes,
        })
    }
}

/// Decide the fate of a held statement (see the module doc).
pub async fn hold<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    info: &SessionInfo,
    held: &Held,
    asked: &Asked<'_>,
    client: &mut FrameReader<R>,
    cancel: &Notify,
) -> Outcome {
    match Gate::of(shared) {
        Some(gate) => gate.hold(info, held, asked, client, cancel).await,
        // Nowhere to ask: the statement is refused, saying so.
        None => Outcome::Refuse(held.error.clone()),
    }
}

impl Gate<'_> {
    /// [`hold`] through this gate.
    pub async fn hold<R: AsyncRead + Unpin>(
        &self,
        info: &SessionInfo,
        held: &Held,
        asked: &Asked<'_>,
        client: &mut FrameReader<R>,
        cancel: &Notify,
    ) -> Outcome {
        let Some(binding) = self.binding(info, asked) else {
            return Outcome::Refuse(unavailable_text("the role is no longer defined"));
        };
        let q = Question {
            gate: self,
            info,
            held,
            asked,
            binding,
        };
        match held.mode {
            ApprovalMode::Defer => defer(&q).await,
            ApprovalMode::Wait => wait(&q, client, cancel).await,
        }
    }
}

impl Gate<'_> {
    /// What an approval of `asked` by this session is bound to; `None` if
    /// the session's role is no longer defined.
    fn binding(&self, info: &SessionInfo, asked: &Asked<'_>) -> Option<Binding> {
        let upstream_user = self.policies.role(&info.role)?.upstream_user.clone();
        Some(Binding {
            identity: info.identity.clone(),
            role: info.role.clone(),
            database: info.database.clone(),
            upstream_user,
            hash: crate::approvals::bound_hash(asked.sql, asked.types, asked.values),
        })
    }

    /// A proposal made outside a session (the admin API's self-service
    /// `propose`, for an agent): the pending request for exactly this
    /// binding, or a new one in `defer` mode, so the identical statement
    /// sent later by the same identity in the same role runs once approved.
    /// Never takes an approved request: only the statement itself does.
    /// Returns the request, its link, and whether it was created now.
    pub async fn propose(
        &self,
        info: &SessionInfo,
        held: &Held,
        sql: &str,
        why: &str,
    ) -> Result<(ApprovalView, String, bool), ApprovalError> {
        let asked = Asked {
            sql,
            types: &[],
            values: &[],
        };
        let binding = self.binding(info, &asked).ok_or_else(|| {
            ApprovalError::NotFound(format!("role {} (no longer defined)", info.role))
        })?;
        if let Some((req, link)) = self.approvals.pending_for(&binding) {
            return Ok((req, link, false));
        }
        let mut held = held.clone();
        held.mode = ApprovalMode::Defer;
        if !why.trim().is_empty() {
            held.reason = format!("{}; the requester says: {}", held.reason, why.trim());
        }
        let q = Question {
            gate: self,
            info,
            held: &held,
            asked: &asked,
            binding,
        };
        let (req, _, link) = ask(&q).await?;
        Ok((req, link, true))
    }
}

/// One held statement and everything its request is made of.
struct Question<'a> {
    gate: &'a Gate<'a>,
    info: &'a SessionInfo,
    held: &'a Held,
    asked: &'a Asked<'a>,
    binding: Binding,
}

async fn defer(q: &Question<'_>) -> Outcome {
    let (approvals, held) = (q.gate.approvals, q.held);
    match approvals.take_approved(&q.binding).await {
        Ok(Some(req)) => {
            info!(approval = %req.id, by = ?req.decided_by, "running an approved statement");
            return Outcome::Run(req.id);
        }
        Ok(None) => {}
        Err(e) => return Outcome::Refuse(unavailable(&e)),
    }
    if let Some((req, link)) = approvals.pending_for(&q.binding) {
        return Outcome::Refuse(deferred(&req, &link, held));
    }
    match ask(q).await {
        Ok((req, _, link)) => Outcome::Refuse(deferred(&req, &link, held)),
        Err(e) => Outcome::Refuse(unavailable(&e)),
    }
}

/// Cancels the request if the session stops waiting for any reason the
/// wait loop does not handle itself (it was ended, or shut down).
struct Pending<'a> {
    approvals: &'a Approvals,
    id: String,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.approvals
                .cancel(&self.id, "the session ended while waiting");
        }
    }
}

async fn wait<R: AsyncRead + Unpin>(
    q: &Question<'_>,
    client: &mut FrameReader<R>,
    cancel: &Notify,
) -> Outcome {
    let approvals = q.gate.approvals;
    // A proposal approved beforehand (see `Gate::propose`) runs it once,
    // as in `defer` mode, instead of asking again.
    match approvals.take_approved(&q.binding).await {
        Ok(Some(req)) => {
            info!(approval = %req.id, by = ?req.decided_by, "running a statement approved beforehand");
            return Outcome::Run(req.id);
        }
        Ok(None) => {}
        Err(e) => return Outcome::Refuse(unavailable(&e)),
    }
    let (req, mut rx, _) = match ask(q).await {
        Ok(r) => r,
        Err(e) => return Outcome::Refuse(unavailable(&e)),
    };
    let mut guard = Pending {
        approvals,
        id: req.id.clone(),
        armed: true,
    };
    let deadline = tokio::time::Instant::now() + approvals.timeout();
    // Read ahead from the client only to notice it leaving; what it sends
    // meanwhile stays buffered, in order, up to the message size limit.
    let mut watch_client = true;
    let limit = q.gate.max_message_bytes;
    info!(approval = %req.id, "waiting for approval");
    loop {
        tokio::select! {
            changed = rx.changed() => {
                let status = *rx.borrow_and_update();
                if changed.is_err() {
                    guard.armed = false;
                    return Outcome::Refuse(unavailable_text("the approval request vanished"));
                }
                match status {
                    Status::Pending => continue,
                    Status::Approved => {
                        guard.armed = false;
                        return match approvals.execute(&req.id).await {
                            Ok(()) => {
                                let by = approvals.get(&req.id).and_then(|r| r.decided_by);
                                info!(approval = %req.id, by = ?by, "approved; running");
                                Outcome::Run(req.id.clone())
                            }
                            Err(e) => Outcome::Refuse(unavailable(&e)),
                        };
                    }
                    Status::Denied => {
                        guard.armed = false;
                        let r = approvals.get(&req.id);
                        return Outcome::Refuse(denied(&req.id, r.as_ref()));
                    }
                    Status::Expired => {
                        guard.armed = false;
                        return Outcome::Refuse(timed_out(&req.id, approvals));
                    }
                    Status::Cancelled | Status::Executed => {
                        guard.armed = false;
                        return Outcome::Refuse(unavailable_text("the approval request was cancelled"));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                approvals.expire_due().await;
                guard.armed = false;
                return Outcome::Refuse(timed_out(&req.id, approvals));
            }
            more = client.fill(), if watch_client => {
                match more {
                    Ok(true) => watch_client = client.buffered() < limit,
                    Ok(false) | Err(_) => {
                        guard.armed = false;
                        approvals.cancel_now(&req.id, "the client disconnected while waiting").await;
                        return Outcome::ClientGone;
                    }
                }
            }
            _ = cancel.notified() => {
                guard.armed = false;
                approvals.cancel_now(&req.id, "the client cancelled the statement").await;
                return Outcome::Refuse(PgError::approval_cancelled(&req.id));
            }
        }
    }
}

/// Compute the preview and create the request.
async fn ask(
    q: &Question<'_>,
) -> Result<(ApprovalView, tokio::sync::watch::Receiver<Status>, String), ApprovalError> {
    let (info, held) = (q.info, q.held);
    let preview = crate::approvals::preview::preview(
        q.gate.upstream,
        &q.binding.upstream_user,
        &info.database,
        q.asked.sql,
        &held.relations,
    )
    .await;
    let (req, rx, link) = q
        .gate
        .approvals
        .request(NewRequest {
            binding: q.binding.clone(),
            grant: info.credential_id.clone(),
            session: info.id,
            client_addr: info.client_addr.to_string(),
            statement: q.asked.sql.to_owned(),
            params: crate::approvals::notify::show_values(
                q.asked.sql,
                q.asked.types,
                q.asked.values,
            ),
            kind: q
                .gate
                .policies
                .identity(&info.identity)
                .map(|i| crate::policy::engine::kind_name(i.kind).to_owned())
                .unwrap_or_default(),
            grant_reason: q.gate.credentials.reason(&info.credential_id),
            class: held.class,
            tables: held.tables.clone(),
            rule: held.rule.clone(),
            reason: held.reason.clone(),
            approvers: held.approvers.clone(),
            mode: held.mode,
            preview,
        })
        .await?;
    Ok((req.view(), rx, link))
}

fn deferred(req: &ApprovalView, link: &str, held: &Held) -> PgError {
    PgError::approval_deferred(
        held.class,
        &req.id,
        link,
        (&held.reason, &held.rule),
        &req.approvers,
    )
}

fn denied(id: &str, req: Option<&ApprovalView>) -> PgError {
    let by = req
        .and_then(|r| r.decided_by.clone())
        .unwrap_or_else(|| "an approver".to_owned());
    PgError::approval_denied(id, &by, req.and_then(|r| r.note.as_deref()))
}

fn timed_out(id: &str, approvals: &Approvals) -> PgError {
    PgError::approval_timed_out(id, approvals.timeout())
}

fn unavailable(e: &ApprovalError) -> PgError {
    warn!(error = %e, "approval could not be processed");
    unavailable_text(&e.to_string())
}

/// Fail closed: the statement does not run.
fn unavailable_text(why: &str) -> PgError {
    PgError::approval_unavailable(why)
}

#[cfg(test)]
mod tests;
