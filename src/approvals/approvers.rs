//! Approver secrets: a long-lived credential that signs an approver in on
//! the approval page and can do nothing else. It is never offered to the
//! PostgreSQL listener, so an approver whose grants have all expired can
//! still decide, and a leaked approver secret reaches no data.
//!
//! Only the SCRAM verifier of a secret is stored (like grants); the secret
//! is shown once, at enrolment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::audit::{Audit, AuditError, Event};
use crate::auth::{SCRAM_ITERATIONS, Verifier};
use crate::policy::PolicySet;
use crate::store::{Store, StoreError, Table};
use crate::time::{now_ms, rfc3339};

/// One approver secret as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApproverSecret {
    pub id: String,
    pub identity: String,
    pub enrolled_at: u64,
    pub enrolled_by: String,
    pub revoked_at: Option<u64>,
    pub revoked_by: Option<String>,
    verifier: Verifier,
}

/// What the API and CLI show (no verifier).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApproverView {
    pub id: String,
    pub identity: String,
    pub enrolled_at: String,
    pub enrolled_by: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

/// An enrolment's answer: the secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    #[serde(flatten)]
    pub approver: ApproverView,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApproverError {
    #[error(
        "{0:?} is not an approver of any role in the loaded policies; add it to a role's approvers first"
    )]
    NotAnApprover(String),
    #[error("no approver secret with id {0:?}")]
    NotFound(String),
    #[error("approver secret {0} is already revoked")]
    Revoked(String),
    #[error("could not derive the verifier")]
    Derive,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl ApproverSecret {
    fn view(&self) -> ApproverView {
        ApproverView {
            id: self.id.clone(),
            identity: self.identity.clone(),
            enrolled_at: rfc3339(self.enrolled_at),
            enrolled_by: self.enrolled_by.clone(),
            revoked_at: self.revoked_at.map(rfc3339),
            revoked_by: self.revoked_by.clone(),
        }
    }
}

/// The approver secrets, stored and indexed by id.
pub struct Approvers {
    store: Arc<Store>,
    table: Table<ApproverSecret>,
    audit: Audit,
    by_id: Mutex<HashMap<String, ApproverSecret>>,
}

impl Approvers {
    pub async fn open(store: Arc<Store>, audit: Audit) -> Result<Approvers, StoreError> {
        let table = store.table("approvers", "approver secret")?;
        let by_id = table
            .all()
            .await?
            .into_iter()
            .map(|a: ApproverSecret| (a.id.clone(), a))
            .collect();
        Ok(Approvers {
            store,
            table,
            audit,
            by_id: Mutex::new(by_id),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ApproverSecret>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give `identity` (an approver of some role) a new secret. Earlier
    /// secrets stay valid until revoked.
    pub async fn enroll(
        &self,
        identity: &str,
        by: &str,
        policies: &PolicySet,
    ) -> Result<Enrolled, ApproverError> {
        if !policies.is_approver(identity) {
            return Err(ApproverError::NotAnApprover(identity.to_owned()));
        }
        // Recognisable in a secret scanner, and not mistaken for a grant's.
        let secret = format!("vap_{}", hex::encode(rand::random::<[u8; 24]>()));
        let salt: [u8; 16] = rand::random();
        let s = secret.clone();
        let verifier = tokio::task::spawn_blocking(move || {
            Verifier::from_password_with_salt(&s, &salt, SCRAM_ITERATIONS)
        })
        .await
        .map_err(|_| ApproverError::Derive)?;
        let a = ApproverSecret {
            id: format!("ap-{}", hex::encode(rand::random::<[u8; 6]>())),
            identity: identity.to_owned(),
            enrolled_at: now_ms(),
            enrolled_by: by.to_owned(),
            revoked_at: None,
            revoked_by: None,
            verifier,
        };
        self.audit
            .append(Event::ApproverEnrolled {
                approver: a.id.clone(),
                identity: a.identity.clone(),
                by: by.to_owned(),
            })
            .await?;
        self.table.put(&a.id, &a).await?;
        self.store.flush().await?;
        let view = a.view();
        self.lock().insert(a.id.clone(), a);
        tracing::info!(approver = %view.id, identity = %view.identity, "approver secret enrolled");
        Ok(Enrolled {
            approver: view,
            secret,
        })
    }

    pub async fn revoke(&self, id: &str, by: &str) -> Result<ApproverView, ApproverError> {
        self.sync().await?;
        let identity = {
            let all = self.lock();
            let a = all
                .get(id)
                .ok_or_else(|| ApproverError::NotFound(id.to_owned()))?;
            if a.revoked_at.is_some() {
                return Err(ApproverError::Revoked(id.to_owned()));
            }
            a.identity.clone()
        };
        // Audited first, as enrolment is: the log may name a revocation a
        // crash then lost, never hold one it does not name.
        self.audit
            .append(Event::ApproverRevoked {
                approver: id.to_owned(),
                identity,
                by: by.to_owned(),
            })
            .await?;
        let now = now_ms();
        let a = self
            .table
            .modify(id, |a: &mut ApproverSecret| {
                if a.revoked_at.is_some() {
                    return Err(ApproverError::Revoked(id.to_owned()));
                }
                a.revoked_at = Some(now);
                a.revoked_by = Some(by.to_owned());
                Ok(())
            })
            .await?
            .ok_or_else(|| ApproverError::NotFound(id.to_owned()))?;
        self.store.flush().await?;
        let view = a.view();
        self.absorb(a);
        Ok(view)
    }

    /// Take in a secret as stored now (changed here or elsewhere).
    pub(super) fn absorb(&self, a: ApproverSecret) {
        self.lock().insert(a.id.clone(), a);
    }

    /// Read what other instances enrolled or revoked since the last look.
    pub async fn sync(&self) -> Result<(), StoreError> {
        for a in self.table.changed().await? {
            self.absorb(a);
        }
        Ok(())
    }

    pub(super) fn table(&self) -> &Table<ApproverSecret> {
        &self.table
    }

    /// Every approver secret, newest first; revoked ones only with `all`.
    pub fn list(&self, all: bool) -> Vec<ApproverView> {
        let mut out: Vec<&ApproverSecret> = Vec::new();
        let g = self.lock();
        out.extend(g.values().filter(|a| all || a.revoked_at.is_none()));
        out.sort_by(|a, b| b.enrolled_at.cmp(&a.enrolled_at).then(a.id.cmp(&b.id)));
        out.into_iter().map(ApproverSecret::view).collect()
    }

    /// The verifiers of `identity`'s unrevoked approver secrets.
    pub fn verifiers(&self, identity: &str) -> Vec<Verifier> {
        self.lock()
            .values()
            .filter(|a| a.identity == identity && a.revoked_at.is_none())
            .map(|a| a.verifier.clone())
            .collect()
    }
}
