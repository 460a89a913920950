//! Just-in-time grants: an identity reaches PostgreSQL only through a grant
//! that names one role and expires (or, for a service's policy-marked
//! standing role, until revoked).
//!
//! Issuing checks the policy (the identity exists, may hold the role, the TTL
//! is within the role's `max_ttl`), creates a random secret that is shown
//! once, and stores only its SCRAM verifier. [`Grants`] is the credential
//! source the proxy authenticates against; the proxy's sweeper
//! (`proxy::sweeper`) ends live sessions whose grant expired or was revoked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{Audit, AuditError, Event};
use crate::auth::{
    Candidate, Credential, CredentialKind, CredentialSource, CredentialState, SCRAM_ITERATIONS,
    SaltKey, Verifier,
};
use crate::classify::Class;
use crate::policy::{Kind, PolicySet};
use crate::protocol::PgError;
use crate::store::{Store, StoreError, Table};
use crate::time::{now_ms, rfc3339};

/// The store's tree of grants.
const TREE: &str = "grants";

/// Longest grant of a role whose policy sets no `max_ttl`.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(8 * 3600);

/// Inactive grants still checked at login so the log can say "expired"
/// rather than "wrong password"; older ones are just wrong passwords.
const INACTIVE_CANDIDATES: usize = 16;

/// A grant as stored. The secret itself is never kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub identity: String,
    pub role: String,
    /// Unix milliseconds.
    pub issued_at: u64,
    /// Unix milliseconds; `None` for a standing role's grant.
    pub expires_at: Option<u64>,
    pub issued_by: String,
    pub reason: Option<String>,
    pub revoked: Option<Revocation>,
    pub verifier: Verifier,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocation {
    pub at: u64,
    pub by: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    Active,
    Expired,
    Revoked,
}

impl Grant {
    pub fn status(&self, now: u64) -> GrantStatus {
        if self.revoked.is_some() {
            GrantStatus::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            GrantStatus::Expired
        } else {
            GrantStatus::Active
        }
    }

    fn credential_state(&self, now: u64) -> CredentialState {
        match (self.status(now), &self.revoked) {
            (GrantStatus::Revoked, Some(r)) => CredentialState::Revoked { by: r.by.clone() },
            (GrantStatus::Expired, _) => {
                CredentialState::Expired(rfc3339(self.expires_at.unwrap_or(now)))
            }
            _ => CredentialState::Active,
        }
    }

    /// The grant as the API and CLI show it (no verifier).
    pub fn view(&self, now: u64) -> GrantView {
        GrantView {
            id: self.id.clone(),
            identity: self.identity.clone(),
            role: self.role.clone(),
            status: self.status(now),
            issued_at: rfc3339(self.issued_at),
            expires_at: self.expires_at.map(rfc3339),
            issued_by: self.issued_by.clone(),
            reason: self.reason.clone(),
            revoked_at: self.revoked.as_ref().map(|r| rfc3339(r.at)),
            revoked_by: self.revoked.as_ref().map(|r| r.by.clone()),
        }
    }
}

/// A grant as the admin API returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantView {
    pub id: String,
    pub identity: String,
    pub role: String,
    pub status: GrantStatus,
    pub issued_at: String,
    /// `null` for a standing role's grant, which lasts until revoked.
    pub expires_at: Option<String>,
    pub issued_by: String,
    pub reason: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

/// A newly issued grant with its secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    #[serde(flatten)]
    pub grant: GrantView,
    pub password: String,
    pub database_url: String,
}

/// What to issue.
#[derive(Debug, Clone, Deserialize)]
pub struct IssueRequest {
    pub identity: String,
    pub role: String,
    /// Required except for an identity's standing role.
    #[serde(default, with = "opt_duration")]
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Who asked (recorded; the admin token is the authority).
    #[serde(default)]
    pub issued_by: Option<String>,
}

/// Why a grant could not be issued or revoked.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("identity {0:?} is not defined by any policy")]
    UnknownIdentity(String),
    #[error("role {0:?} is not defined by any policy")]
    UnknownRole(String),
    #[error("identity {identity:?} may not hold role {role:?} (it may hold: {allowed})")]
    RoleNotAllowed {
        identity: String,
        role: String,
        allowed: String,
    },
    #[error(
        "identity {identity:?} is of kind {kind}, which may not hold role {role:?}: it allows {class} statements without approval"
    )]
    KindForbids {
        identity: String,
        kind: &'static str,
        role: String,
        class: Class,
    },
    #[error("a TTL is required for role {0:?} (e.g. --ttl 1h)")]
    TtlRequired(String),
    #[error("TTL {asked} exceeds the maximum of {max} for role {role:?}")]
    TtlTooLong {
        role: String,
        asked: String,
        max: String,
    },
    #[error("TTL must be at least one second")]
    TtlTooShort,
    #[error("{0}")]
    Invalid(String),
    #[error("no grant with id {0:?}")]
    NotFound(String),
    #[error("grant {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("grant {0} has already expired")]
    AlreadyExpired(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<Grant>>,
    /// Grant ids per identity, newest first.
    by_identity: HashMap<String, Vec<String>>,
    /// Expired grants already logged.
    expiry_noticed: HashSet<String>,
}

impl Index {
    /// Take in a grant as stored now (new, or changed here or elsewhere).
    fn absorb(&mut self, g: Grant) {
        let ids = self.by_identity.entry(g.identity.clone()).or_default();
        if !ids.contains(&g.id) {
            let issued = |id: &String| self.by_id.get(id).map_or(0, |o| o.issued_at);
            let at = ids
                .iter()
                .position(|id| issued(id) < g.issued_at)
                .unwrap_or(ids.len());
            ids.insert(at, g.id.clone());
        }
        self.by_id.insert(g.id.clone(), Arc::new(g));
    }
}

/// Every grant ever issued, read from the store (for reports that must not
/// depend on a daemon's memory).
/// Blocking: call off the async workers.
pub fn stored(store: &Store) -> Result<Vec<Grant>, StoreError> {
    store.table::<Grant>(TREE, "grant")?.all_blocking()
}

/// The grants: stored in the [`Store`], indexed in memory for logins.
pub struct Grants {
    store: Arc<Store>,
    table: Table<Grant>,
    audit: Audit,
    salts: SaltKey,
    index: Mutex<Index>,
    /// Development credentials from config, always active.
    dev: Vec<Credential>,
    /// Where clients connect, for the `database_url` of an issued grant;
    /// set once the listener is bound (its port may have been 0).
    base_url: std::sync::OnceLock<url::Url>,
}

impl Grants {
    /// Load every grant from the store.
    pub async fn open(store: Arc<Store>, audit: Audit) -> Result<Grants, StoreError> {
        let salts = SaltKey::new(&store.key("scram-salt").await?);
        let table: Table<Grant> = store.table(TREE, "grant")?;
        let mut index = Index::default();
        let now = now_ms();
        for g in table.all().await? {
            if g.status(now) == GrantStatus::Expired {
                index.expiry_noticed.insert(g.id.clone());
            }
            index.absorb(g);
        }
        Ok(Grants {
            store,
            table,
            audit,
            salts,
            index: Mutex::new(index),
            dev: Vec::new(),
            base_url: std::sync::OnceLock::new(),
        })
    }

    /// The key that derives SCRAM salts, for building dev credentials.
    pub fn salts(&self) -> &SaltKey {
        &self.salts
    }

    /// The firewall's address as clients should use it (no user or
    /// password), for the `database_url` of issued grants. Set once.
    pub fn set_database_url(&self, url: url::Url) {
        let _ = self.base_url.set(url);
    }

    /// The URL clients are given (no credentials), once set.
    pub fn client_url(&self) -> Option<&url::Url> {
        self.base_url.get()
    }

    /// The development credentials' (identity, role) pairs: standing
    /// secrets that bypass grants, for the inventory.
    pub fn dev_credentials(&self) -> Vec<(String, String)> {
        self.dev
            .iter()
            .map(|c| (c.identity.clone(), c.role.clone()))
            .collect()
    }

    /// Add development credentials (config `[[dev_credentials]]`).
    pub fn with_dev_credentials(mut self, dev: Vec<Credential>) -> Grants {
        self.dev = dev;
        self
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Check the request against policy, create the grant and its secret,
    /// and return once it is durable.
    pub async fn issue(
        &self,
        policies: &PolicySet,
        req: IssueRequest,
    ) -> Result<Issued, GrantError> {
        let expires_in = check_issue(policies, &req)?;
        let issued_by = req
            .issued_by
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("admin")
            .to_owned();
        // 192 bits, hex so it needs no escaping in a URL or a shell.
        let password = hex::encode(rand::random::<[u8; 24]>());
        let salt = self.salts.salt(&req.identity);
        let pw = password.clone();
        // PBKDF2 rounds: keep them off the async workers.
        let verifier = tokio::task::spawn_blocking(move || {
            Verifier::from_password_with_salt(&pw, &salt, SCRAM_ITERATIONS)
        })
        .await
        .map_err(|e| GrantError::Invalid(format!("could not derive the verifier: {e}")))?;
        let now = now_ms();
        let grant = Grant {
            id: format!("g-{}", hex::encode(rand::random::<[u8; 6]>())),
            identity: req.identity,
            role: req.role,
            issued_at: now,
            expires_at: expires_in.map(|d| now + d.as_millis() as u64),
            issued_by,
            reason: req.reason.filter(|r| !r.trim().is_empty()),
            revoked: None,
            verifier,
        };
        // Audited first: the log may name a grant a crash then lost, but
        // never holds a grant it does not name.
        self.audit
            .append(Event::GrantIssued {
                grant: grant.id.clone(),
                identity: grant.identity.clone(),
                role: grant.role.clone(),
                expires_at: grant.expires_at.map(rfc3339),
                issued_by: grant.issued_by.clone(),
                reason: grant.reason.clone(),
            })
            .await?;
        self.table.put(&grant.id, &grant).await?;
        self.store.flush().await?;
        // Usable only once durable: a grant nobody was told about cannot
        // survive a crash it did not survive.
        self.index().absorb(grant.clone());
        tracing::info!(
            grant = %grant.id,
            identity = %grant.identity,
            role = %grant.role,
            issued_by = %grant.issued_by,
            expires_at = ?grant.expires_at.map(rfc3339),
            "grant issued"
        );
        let database_url = self.database_url(&grant.identity, &password);
        Ok(Issued {
            grant: grant.view(now),
            password,
            database_url,
        })
    }

    /// Revoke a grant. It stops working at once (before the write is
    /// durable, which only errs on the safe side); the caller ends its
    /// sessions.
    pub async fn revoke(
        &self,
        id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<GrantView, GrantError> {
        let now = now_ms();
        // A conditional update of what is stored: two instances revoking
        // at once cannot both succeed, nor undo each other.
        let updated = self
            .table
            .modify(id, |g: &mut Grant| {
                match g.status(now) {
                    GrantStatus::Revoked => return Err(GrantError::AlreadyRevoked(id.to_owned())),
                    GrantStatus::Expired => return Err(GrantError::AlreadyExpired(id.to_owned())),
                    GrantStatus::Active => {}
                }
                g.revoked = Some(Revocation {
                    at: now,
                    by: by.to_owned(),
                    reason: reason.clone().filter(|r| !r.trim().is_empty()),
                });
                Ok(())
            })
            .await?
            .ok_or_else(|| GrantError::NotFound(id.to_owned()))?;
        // It stops working here at once, before the write is durable, which
        // only errs on the safe side; other instances hear of it from the
        // store.
        self.index().absorb(updated.clone());
        self.store.flush().await?;
        self.audit
            .append(Event::GrantRevoked {
                grant: id.to_owned(),
                identity: updated.identity.clone(),
                by: by.to_owned(),
                reason: updated.revoked.as_ref().and_then(|r| r.reason.clone()),
            })
            .await?;
        tracing::info!(grant = %id, identity = %updated.identity, by, "grant revoked");
        Ok(updated.view(now))
    }

    /// Grants, newest first; only active ones unless `all`.
    pub fn list(&self, all: bool) -> Vec<GrantView> {
        let now = now_ms();
        let index = self.index();
        let mut out: Vec<&Arc<Grant>> = index
            .by_id
            .values()
            .filter(|g| all || g.status(now) == GrantStatus::Active)
            .collect();
        out.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(a.id.cmp(&b.id)));
        out.into_iter().map(|g| g.view(now)).collect()
    }

    pub fn get(&self, id: &str) -> Option<GrantView> {
        self.index().by_id.get(id).map(|g| g.view(now_ms()))
    }

    /// Number of grants usable now.
    pub fn active_count(&self) -> usize {
        let now = now_ms();
        self.index()
            .by_id
            .values()
            .filter(|g| g.status(now) == GrantStatus::Active)
            .count()
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Grants that expired since the last call (each reported once).
    pub fn newly_expired(&self) -> Vec<GrantView> {
        let now = now_ms();
        let mut index = self.index();
        let expired: Vec<Arc<Grant>> = index
            .by_id
            .values()
            .filter(|g| g.status(now) == GrantStatus::Expired)
            .filter(|g| !index.expiry_noticed.contains(&g.id))
            .cloned()
            .collect();
        for g in &expired {
            index.expiry_noticed.insert(g.id.clone());
        }
        expired.iter().map(|g| g.view(now)).collect()
    }

    fn database_url(&self, identity: &str, password: &str) -> String {
        let mut url = self
            .base_url
            .get()
            .cloned()
            .unwrap_or_else(|| url::Url::parse("postgres://localhost/").expect("static URL"));
        // Only fails for URLs that cannot have credentials, which config
        // validation rules out.
        let _ = url.set_username(identity);
        let _ = url.set_password(Some(password));
        url.to_string()
    }
}

impl CredentialSource for Grants {
    fn salt(&self, identity: &str) -> Vec<u8> {
        self.salts.salt(identity)
    }

    fn candidates(&self, identity: &str) -> Vec<Candidate> {
        let now = now_ms();
        let index = self.index();
        let mut out = Vec::new();
        let mut inactive = 0;
        for id in index.by_identity.get(identity).into_iter().flatten() {
            let Some(g) = index.by_id.get(id) else {
                continue;
            };
            let state = g.credential_state(now);
            if state != CredentialState::Active {
                inactive += 1;
                if inactive > INACTIVE_CANDIDATES {
                    continue;
                }
            }
            out.push(Candidate {
                credential: Credential {
                    id: g.id.clone(),
                    identity: g.identity.clone(),
                    role: g.role.clone(),
                    verifier: g.verifier.clone(),
                    kind: CredentialKind::Grant,
                },
                state,
            });
        }
        out.extend(
            self.dev
                .iter()
                .filter(|c| c.identity == identity)
                .map(|c| Candidate {
                    credential: c.clone(),
                    state: CredentialState::Active,
                }),
        );
        out
    }

    fn state(&self, credential_id: &str) -> CredentialState {
        if let Some(g) = self.index().by_id.get(credential_id) {
            return g.credential_state(now_ms());
        }
        if self.dev.iter().any(|c| c.id == credential_id) {
            CredentialState::Active
        } else {
            CredentialState::Gone
        }
    }

    fn reason(&self, credential_id: &str) -> Option<String> {
        self.index().by_id.get(credential_id)?.reason.clone()
    }

    fn refresh(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if !self.store.available() {
                return Err("this instance has lost its control database".into());
            }
            self.sync().await.map_err(|e| e.to_string())
        })
    }
}

/// The policy checks of an issue request; returns the grant's lifetime
/// (`None`: until revoked).
fn check_issue(policies: &PolicySet, req: &IssueRequest) -> Result<Option<Duration>, GrantError> {
    let ident = policies
        .identity(&req.identity)
        .ok_or_else(|| GrantError::UnknownIdentity(req.identity.clone()))?;
    let role = policies
        .role(&req.role)
        .ok_or_else(|| GrantError::UnknownRole(req.role.clone()))?;
    let standing = ident.standing.as_deref() == Some(req.role.as_str());
    if !standing && !ident.roles.contains(&req.role) {
        let allowed: Vec<&str> = ident
            .roles
            .iter()
            .chain(ident.standing.iter())
            .map(String::as_str)
            .collect();
        return Err(GrantError::RoleNotAllowed {
            identity: req.identity.clone(),
            role: req.role.clone(),
            allowed: if allowed.is_empty() {
                "none".into()
            } else {
                allowed.join(", ")
            },
        });
    }
    // The kind sets a floor no policy file can lower: an agent never holds
    // a role that runs destructive statements unreviewed, and nothing but a
    // human holds one that runs privileged or unknown ones.
    let forbidden: &[Class] = match ident.kind {
        Kind::Agent => &[Class::Destructive, Class::Privileged, Class::Unknown],
        Kind::Ci | Kind::Service => &[Class::Privileged, Class::Unknown],
        Kind::Human => &[],
    };
    if let Some(class) = forbidden.iter().find(|c| role.allow.contains(c)) {
        return Err(GrantError::KindForbids {
            identity: req.identity.clone(),
            kind: crate::policy::engine::kind_name(ident.kind),
            role: req.role.clone(),
            class: *class,
        });
    }
    let Some(ttl) = req.ttl else {
        return if standing {
            Ok(None)
        } else {
            Err(GrantError::TtlRequired(req.role.clone()))
        };
    };
    if ttl < Duration::from_secs(1) {
        return Err(GrantError::TtlTooShort);
    }
    if !standing {
        let max = role_max_ttl(role);
        if ttl > max {
            return Err(GrantError::TtlTooLong {
                role: req.role.clone(),
                asked: humantime::format_duration(ttl).to_string(),
                max: humantime::format_duration(max).to_string(),
            });
        }
    }
    Ok(Some(ttl))
}

fn role_max_ttl(role: &crate::policy::Role) -> Duration {
    role.max_ttl
        .as_deref()
        // Validated when the policies loaded.
        .and_then(|t| crate::config::parse_duration(t).ok())
        .unwrap_or(DEFAULT_MAX_TTL)
}

/// Whether a grant's identity may still hold its role under the policies
/// in force now (they may have changed since it was issued).
pub fn still_permitted(policies: &PolicySet, identity: &str, role: &str) -> Result<(), String> {
    let Some(ident) = policies.identity(identity) else {
        return Err(format!(
            "identity \"{identity}\" is no longer defined by any policy"
        ));
    };
    if ident.standing.as_deref() == Some(role) || ident.roles.iter().any(|r| r == role) {
        Ok(())
    } else {
        Err(format!(
            "identity \"{identity}\" may no longer hold role \"{role}\""
        ))
    }
}

/// The FATAL error a session gets when its credential stops being valid.
pub fn session_ended(credential_id: &str, state: &CredentialState) -> PgError {
    match state {
        CredentialState::Expired(at) => PgError::grant_expired(credential_id, at),
        CredentialState::Revoked { by } => PgError::grant_revoked(credential_id, by),
        CredentialState::Gone | CredentialState::Active => PgError::credential_gone(credential_id),
    }
}

/// TTLs in requests are human durations (`90s`, `15m`, `1h`).
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::config::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

mod follow;
#[cfg(test)]
mod tests;
