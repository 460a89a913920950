//! The human gate: a statement policy holds becomes an approval request
//! (stored, with a blast-radius preview), approvers are told (webhook, log or
//! terminal), and only an approver's decision lets it run.
//!
//! A request moves `pending → approved → executed`, or to `denied`,
//! `expired` or `cancelled` (the waiting client went away). Each change is
//! durable before anyone acts on it, and the state machine is the guarantee
//! that an approval runs its statement at most once. In `wait` mode the
//! session blocks on the request (see `proxy::hold`); in `defer` mode
//! the client is refused at once and the identical statement from the same
//! identity and role, re-sent after approval, runs once. A request can also
//! be proposed without a session (`proxy::hold::Gate::propose`); it is
//! `defer` then, and taken the same way by either mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{Audit, AuditError, Event};
use crate::config::ApprovalsConfig;
use crate::policy::{ApprovalMode, PolicySet};
use crate::shutdown::{Phase, Shutdown};
use crate::store::{Store, StoreError, Table};
use crate::time::now_ms;

pub mod approvers;
mod ending;
mod follow;
pub mod notify;
pub mod preview;
mod request;
mod token;

pub use notify::Notifier;
pub use request::{
    ApprovalRequest, ApprovalView, Binding, NewRequest, Status, Values, bound_hash, statement_hash,
};

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval request with id {0:?}")]
    NotFound(String),
    #[error("approval request {id} is already {status}")]
    Decided { id: String, status: &'static str },
    #[error("approval request {0} has expired")]
    Expired(String),
    #[error("approval request {0} is being decided by another approver right now")]
    BeingDecided(String),
    #[error("{approver:?} may not approve this request (approvers: {approvers})")]
    NotAnApprover { approver: String, approvers: String },
    #[error("{0:?} asked for this statement and cannot approve it; another approver must")]
    SelfApproval(String),
    #[error("this approval link is invalid or has been tampered with")]
    BadLink,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

struct Entry {
    req: ApprovalRequest,
    /// Waiting sessions watch the status.
    tx: watch::Sender<Status>,
    /// The last message posted about this request: the next one waits for
    /// it, so chat shows a request's story in order.
    posted: Option<tokio::task::JoinHandle<()>>,
}

impl Entry {
    fn new(req: ApprovalRequest) -> Entry {
        let (tx, _) = watch::channel(req.status);
        Entry {
            req,
            tx,
            posted: None,
        }
    }
}

/// Approval requests: stored, indexed in memory, watched by waiting
/// sessions.
pub struct Approvals {
    store: Arc<Store>,
    table: Table<ApprovalRequest>,
    audit: Audit,
    links: token::Links,
    entries: Mutex<HashMap<String, Entry>>,
    timeout: Duration,
    notifier: Notifier,
    /// Base of approval links; set once the admin listener is bound.
    public_url: OnceLock<String>,
    /// Approvers' own page credentials.
    pub approvers: approvers::Approvers,
    /// This, for the work a sync caller hands to a task.
    this: Weak<Approvals>,
}

impl Approvals {
    /// Load requests from the store. Pending `wait` requests this
    /// instance's sessions made before a restart have lost their session:
    /// they are cancelled.
    pub async fn open(
        store: Arc<Store>,
        config: &ApprovalsConfig,
        notifier: Notifier,
        audit: Audit,
    ) -> Result<Arc<Approvals>, StoreError> {
        let links = token::Links::new(&store.key("approval-links").await?);
        let table: Table<ApprovalRequest> = store.table("approvals", "approval")?;
        let mut entries = HashMap::new();
        let me = store.instance().to_owned();
        for req in table.all().await? {
            let mine = req.instance.as_deref().is_none_or(|i| i == me);
            let req = if req.status == Status::Pending && req.mode == ApprovalMode::Wait && mine {
                let cancelled = table
                    .modify(&req.id, |r: &mut ApprovalRequest| {
                        if r.status != Status::Pending {
                            return Err(ApprovalError::Decided {
                                id: r.id.clone(),
                                status: r.status.as_str(),
                            });
                        }
                        r.status = Status::Cancelled;
                        r.note = Some("the firewall restarted while the session waited".into());
                        Ok(())
                    })
                    .await;
                match cancelled {
                    Ok(Some(r)) => r,
                    // Decided meanwhile (on another instance): as it is.
                    Ok(None) | Err(ApprovalError::Decided { .. }) => req,
                    Err(ApprovalError::Store(e)) => return Err(e),
                    Err(e) => return Err(StoreError::corrupt("approval", &e.to_string())),
                }
            } else {
                req
            };
            entries.insert(req.id.clone(), Entry::new(req));
        }
        store.flush().await?;
        let approvers = approvers::Approvers::open(store.clone(), audit.clone()).await?;
        Ok(Arc::new_cyclic(|this| Approvals {
            approvers,
            store,
            table,
            audit,
            links,
            entries: Mutex::new(entries),
            timeout: config.timeout,
            notifier,
            public_url: OnceLock::new(),
            this: this.clone(),
        }))
    }

    pub fn set_public_url(&self, url: &str) {
        let _ = self.public_url.set(url.trim_end_matches('/').to_owned());
    }

    /// `scheme://host[:port]` of the public URL links are built on.
    pub fn public_origin(&self) -> Option<String> {
        let u = url::Url::parse(self.public_url.get()?).ok()?;
        Some(u.origin().ascii_serialization())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page link for a request, with its token.
    pub fn link(&self, req: &ApprovalRequest) -> String {
        let base = self
            .public_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://localhost");
        format!(
            "{base}/approvals/{}?t={}",
            req.id,
            self.links.token(&req.id, &req.link_nonce, req.expires_at)
        )
    }

    /// The page link of request `id`.
    pub fn link_for(&self, id: &str) -> Option<String> {
        self.lock().get(id).map(|e| self.link(&e.req))
    }

    /// Store a new request (durably), then tell the approvers in the
    /// background. Returns the request, a watch on its status and its link.
    pub async fn request(
        self: &Arc<Self>,
        new: NewRequest,
    ) -> Result<(ApprovalRequest, watch::Receiver<Status>, String), ApprovalError> {
        let now = now_ms();
        let req = ApprovalRequest {
            id: format!("a-{}", hex::encode(rand::random::<[u8; 6]>())),
            // Bound to the exact text; shown, stored and sent redacted, like
            // the audit record (the hash is of the real statement).
            statement_hash: new.binding.hash,
            identity: new.binding.identity,
            role: new.binding.role,
            grant: new.grant,
            session: new.session,
            client_addr: new.client_addr,
            database: new.binding.database,
            upstream_user: new.binding.upstream_user,
            params: new.params,
            kind: new.kind,
            grant_reason: new.grant_reason,
            statement: crate::classify::redact(&new.statement).into_owned(),
            class: new.class,
            tables: new.tables,
            rule: new.rule,
            reason: new.reason,
            approvers: new.approvers,
            mode: new.mode,
            preview: new.preview,
            created_at: now,
            expires_at: now + self.timeout.as_millis() as u64,
            status: Status::Pending,
            decided_by: None,
            decided_at: None,
            decided_via: None,
            note: None,
            executed_at: None,
            outcome: None,
            notification: None,
            link_nonce: token::Links::nonce(),
            instance: Some(self.store.instance().to_owned()),
            claimed: None,
        };
        self.audit
            .append(Event::ApprovalRequested {
                approval: req.id.clone(),
                identity: req.identity.clone(),
                role: req.role.clone(),
                grant: req.grant.clone(),
                session: req.session,
                class: req.class.to_string(),
                statement_hash: req.statement_hash.clone(),
                tables: req.tables.clone(),
                mode: format!("{:?}", req.mode).to_lowercase(),
                notified: None,
            })
            .await?;
        self.table.put(&req.id, &req).await?;
        self.store.flush().await?;
        let link = self.link(&req);
        tracing::info!(
            approval = %req.id,
            identity = %req.identity,
            class = %req.class,
            mode = ?req.mode,
            "approval requested"
        );
        let me = self.clone();
        let view = req.view();
        let l = link.clone();
        // Spawned under the lock, so its bookkeeping finds the entry. The
        // entry may be there already (this instance heard of its own write
        // first): the session watches whichever is in the map, the one
        // every change is sent on.
        let mut entries = self.lock();
        let entry = entries
            .entry(req.id.clone())
            .or_insert_with(|| Entry::new(req.clone()));
        let rx = entry.tx.subscribe();
        entry.posted = Some(tokio::spawn(async move {
            let outcome = me.notifier.send(&view, &l).await;
            if let Err(e) = &outcome {
                tracing::warn!(approval = %view.id, error = %e, "approvers could not be notified; the request stays decidable with veilctl approvals");
            }
            let told = match outcome {
                Ok(m) => m,
                Err(e) => format!("failed: {e}"),
            };
            me.update(&view.id, move |r| r.notification = Some(told.clone()));
        }));
        drop(entries);
        Ok((req, rx, link))
    }

    /// Change a request in memory and, from a task, in the store (not
    /// flushed: for bookkeeping that no decision depends on). The stored
    /// change is conditional, so it never undoes a decision made
    /// meanwhile, here or on another instance.
    fn update(&self, id: &str, change: impl Fn(&mut ApprovalRequest) + Send + Sync + 'static) {
        if let Some(e) = self.lock().get_mut(id) {
            change(&mut e.req);
        }
        let (Some(me), Ok(rt)) = (self.this.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let id = id.to_owned();
        rt.spawn(async move {
            let stored = me
                .table
                .modify(&id, |r| {
                    change(r);
                    Ok::<(), StoreError>(())
                })
                .await;
            match stored {
                Ok(Some(r)) => me.absorb(r),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(approval = %id, error = %err, "could not store an approval update")
                }
            }
        });
    }

    /// Tell the approvers what became of a request (decided, cancelled,
    /// expired, ran), after whatever was posted about it before.
    fn follow_up(&self, e: &mut Entry) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let view = e.req.view();
        let before = e.posted.take();
        let notifier = self.notifier.clone();
        e.posted = Some(rt.spawn(async move {
            if let Some(b) = before {
                let _ = b.await;
            }
            if let Err(err) = notifier.send_update(&view).await {
                tracing::warn!(approval = %view.id, error = %err, "could not post what became of an approval request");
            }
        }));
    }

    /// What PostgreSQL answered when an approved statement ran: kept on the
    /// request and posted to the approvers.
    pub fn finished(&self, id: &str, outcome: String) {
        {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(id) else {
                return;
            };
            if e.req.outcome.is_some() {
                return;
            }
            e.req.outcome = Some(outcome.clone());
            self.follow_up(e);
        }
        self.update(id, move |r| {
            r.outcome.get_or_insert_with(|| outcome.clone());
        });
    }

    /// The transaction an approved statement ran in has ended (`how`:
    /// "committed", "was rolled back", …): told to the approvers too.
    pub fn settled(&self, id: &str, how: &str) {
        let settle = |o: &str| {
            let o = o.split(" (inside a transaction").next().unwrap_or(o);
            format!("{o}; its transaction {how}")
        };
        let outcome = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(id) else {
                return;
            };
            let Some(o) = &e.req.outcome else {
                return;
            };
            let o = settle(o);
            e.req.outcome = Some(o.clone());
            self.follow_up(e);
            o
        };
        self.update(id, move |r| r.outcome = Some(outcome.clone()));
    }

    /// Approve or deny. `approver` must be one of the request's approvers,
    /// still defined by policy, and not the requester.
    pub async fn decide(
        &self,
        id: &str,
        approver: &str,
        approve: bool,
        via: &str,
        note: Option<String>,
        policies: &PolicySet,
    ) -> Result<ApprovalView, ApprovalError> {
        // Three conditional updates of the stored request. The claim: of
        // two approvers (on any instances) deciding at once, one goes on
        // and the other is told it is being decided.
        let now = now_ms();
        let note = note.filter(|n| !n.trim().is_empty());
        let mine = Some((approver.to_owned(), now));
        self.table
            .modify(id, |r| {
                check_decidable(r, now)?;
                check_approver(r, approver, policies)?;
                if r.claimed_at(now).is_some() {
                    return Err(ApprovalError::BeingDecided(id.to_owned()));
                }
                r.claimed = mine.clone();
                Ok::<(), ApprovalError>(())
            })
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        // The record, durable before the decision takes effect: a decision
        // the log cannot name never lets a statement run.
        let status = if approve {
            Status::Approved
        } else {
            Status::Denied
        };
        let recorded = self
            .audit
            .append(Event::ApprovalDecided {
                approval: id.to_owned(),
                status: status.as_str().to_owned(),
                by: Some(approver.to_owned()),
                via: Some(via.to_owned()),
                note: note.clone(),
            })
            .await;
        if let Err(e) = recorded {
            // Undone: the request stays pending, decidable again.
            let _ = self
                .table
                .modify(id, |r| {
                    if r.claimed == mine {
                        r.claimed = None;
                    }
                    Ok::<(), StoreError>(())
                })
                .await;
            return Err(e.into());
        }
        // The decision, only by the claim's holder.
        let req = self
            .table
            .modify(id, |r| {
                if r.claimed != mine || r.status != Status::Pending {
                    return Err(ApprovalError::Decided {
                        id: id.to_owned(),
                        status: r.status.as_str(),
                    });
                }
                r.claimed = None;
                r.status = status;
                r.decided_by = Some(approver.to_owned());
                r.decided_at = Some(now);
                r.decided_via = Some(via.to_owned());
                r.note = note.clone();
                Ok(())
            })
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        let view = req.view();
        self.store.flush().await?;
        // The waiting session (here, or on another instance when it hears
        // of the change) goes on; chat hears of it only once it is durable
        // and audited.
        self.absorb(req);
        if let Some(e) = self.lock().get_mut(id) {
            self.follow_up(e);
        }
        tracing::info!(approval = %id, by = approver, status = view.status.as_str(), via, "approval decided");
        Ok(view)
    }

    /// Whether `approver` could decide this request now (for the page,
    /// before it asks for a secret).
    pub fn may_decide(
        &self,
        id: &str,
        approver: &str,
        policies: &PolicySet,
    ) -> Result<(), ApprovalError> {
        let entries = self.lock();
        let e = entries
            .get(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        check_decidable(&e.req, now_ms())?;
        check_approver(&e.req, approver, policies)
    }

    /// An approved request is about to run: mark it executed (durably).
    /// Fails unless it is approved, so it runs at most once.
    pub async fn execute(&self, id: &str) -> Result<(), ApprovalError> {
        let req = self
            .table
            .modify(id, |r| {
                if r.status != Status::Approved {
                    return Err(ApprovalError::Decided {
                        id: id.to_owned(),
                        status: r.status.as_str(),
                    });
                }
                r.status = Status::Executed;
                r.executed_at = Some(now_ms());
                Ok(())
            })
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        self.absorb(req);
        self.store.flush().await?;
        self.audit
            .append(Event::ApprovalExecuted {
                approval: id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// For `defer`: the approved, unused, unexpired request for exactly
    /// this binding, marked executed. At most one caller gets it, on any
    /// instance: taking it is a conditional update of the stored request.
    pub async fn take_approved(
        &self,
        binding: &Binding,
    ) -> Result<Option<ApprovalView>, ApprovalError> {
        // An approval decided on another instance a moment ago.
        self.sync().await?;
        let now = now_ms();
        let candidates: Vec<String> = self
            .lock()
            .values()
            .filter(|e| {
                e.req.status == Status::Approved
                    && e.req.expires_at > now
                    && binding.matches(&e.req)
            })
            .map(|e| e.req.id.clone())
            .collect();
        for id in candidates {
            let taken = self
                .table
                .modify(&id, |r| {
                    if r.status != Status::Approved || r.expires_at <= now || !binding.matches(r) {
                        return Err(ApprovalError::Decided {
                            id: id.clone(),
                            status: r.status.as_str(),
                        });
                    }
                    r.status = Status::Executed;
                    r.executed_at = Some(now);
                    Ok(())
                })
                .await;
            let req = match taken {
                Ok(Some(req)) => req,
                // Someone else took it first (or it changed): the next.
                Ok(None) | Err(ApprovalError::Decided { .. }) => continue,
                Err(e) => return Err(e),
            };
            let view = req.view();
            self.absorb(req);
            self.store.flush().await?;
            self.audit
                .append(Event::ApprovalExecuted {
                    approval: view.id.clone(),
                })
                .await?;
            return Ok(Some(view));
        }
        Ok(None)
    }

    /// For `defer`: a pending request for exactly this binding, so
    /// re-sending it does not page the approvers again.
    pub fn pending_for(&self, binding: &Binding) -> Option<(ApprovalView, String)> {
        let now = now_ms();
        let entries = self.lock();
        entries
            .values()
            .find(|e| {
                e.req.status == Status::Pending && e.req.expires_at > now && binding.matches(&e.req)
            })
            .map(|e| (e.req.view(), self.link(&e.req)))
    }

    /// Requests, newest first; pending ones unless `all`.
    pub fn list(&self, all: bool) -> Vec<ApprovalView> {
        let entries = self.lock();
        let mut out: Vec<&ApprovalRequest> = entries
            .values()
            .map(|e| &e.req)
            .filter(|r| all || r.status == Status::Pending)
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out.into_iter().map(ApprovalRequest::view).collect()
    }

    pub fn get(&self, id: &str) -> Option<ApprovalView> {
        self.lock().get(id).map(|e| e.req.view())
    }

    /// The request a page link points at, if the token is genuine.
    pub fn by_link(&self, id: &str, token: &str) -> Result<ApprovalView, ApprovalError> {
        let entries = self.lock();
        let Some(e) = entries.get(id) else {
            // Same answer as a bad token: links do not reveal which ids exist.
            return Err(ApprovalError::BadLink);
        };
        if !self
            .links
            .verify(&e.req.id, &e.req.link_nonce, e.req.expires_at, token)
        {
            return Err(ApprovalError::BadLink);
        }
        Ok(e.req.view())
    }
}

fn check_decidable(req: &ApprovalRequest, now: u64) -> Result<(), ApprovalError> {
    if req.status != Status::Pending {
        return Err(ApprovalError::Decided {
            id: req.id.clone(),
            status: req.status.as_str(),
        });
    }
    if req.expires_at <= now {
        return Err(ApprovalError::Expired(req.id.clone()));
    }
    Ok(())
}

fn check_approver(
    req: &ApprovalRequest,
    approver: &str,
    policies: &PolicySet,
) -> Result<(), ApprovalError> {
    if approver == req.identity {
        return Err(ApprovalError::SelfApproval(approver.to_owned()));
    }
    if !req.approvers.iter().any(|a| a == approver) || policies.identity(approver).is_none() {
        return Err(ApprovalError::NotAnApprover {
            approver: approver.to_owned(),
            approvers: req.approvers.join(", "),
        });
    }
    Ok(())
}

/// Expire requests once a second until the firewall closes.
pub async fn expirer(approvals: Arc<Approvals>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => { approvals.expire_due().await; }
            _ = shutdown.reached(Phase::Closing) => return,
        }
    }
}
