//! An approval request and what it is bound to: its states, the record
//! kept of it, the view shown to people, and the hashes that tie an
//! approval to one exact statement (and its parameters).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classify::Class;
use crate::policy::ApprovalMode;
use crate::time::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Executed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Executed => "executed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// An approval request as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub identity: String,
    pub role: String,
    /// The grant (credential id) the session logged in with.
    pub grant: String,
    pub session: u64,
    pub client_addr: String,
    pub database: String,
    /// The text, redacted as in the audit log.
    pub statement: String,
    /// Hex SHA-256 of the exact text and, for a prepared statement, the
    /// parameter values it runs with: what the approval is bound to.
    pub statement_hash: String,
    /// The parameter values (a prepared statement's `Bind`), as shown.
    #[serde(default)]
    pub params: Vec<String>,
    /// The PostgreSQL user the role runs as when the request was made.
    #[serde(default)]
    pub upstream_user: String,
    /// The identity's kind (`human`, `ci`, `service`, `agent`).
    #[serde(default)]
    pub kind: String,
    /// Why the session's grant was issued (often a ticket).
    #[serde(default)]
    pub grant_reason: Option<String>,
    pub class: Class,
    pub tables: Vec<String>,
    pub rule: String,
    pub reason: String,
    pub approvers: Vec<String>,
    pub mode: ApprovalMode,
    pub preview: Vec<String>,
    /// Unix milliseconds.
    pub created_at: u64,
    pub expires_at: u64,
    pub status: Status,
    pub decided_by: Option<String>,
    pub decided_at: Option<u64>,
    /// `link` or `veilctl`.
    pub decided_via: Option<String>,
    pub note: Option<String>,
    pub executed_at: Option<u64>,
    /// What PostgreSQL answered when the approved statement ran
    /// (`ran: DELETE 100`, `failed: SQLSTATE 23503`).
    #[serde(default)]
    pub outcome: Option<String>,
    /// How telling the approvers went.
    pub notification: Option<String>,
    /// Nonce of the link token (the token is not stored).
    pub(super) link_nonce: String,
    /// The firewall instance whose session asked (several share one
    /// control database); `None` in records from before there were.
    #[serde(default)]
    pub instance: Option<String>,
}

/// A request as the API, the page and messages show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: String,
    pub identity: String,
    pub role: String,
    pub grant: String,
    pub session: u64,
    pub client_addr: String,
    pub database: String,
    pub statement: String,
    pub statement_hash: String,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub upstream_user: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub grant_reason: Option<String>,
    pub class: Class,
    pub tables: Vec<String>,
    pub rule: String,
    pub reason: String,
    pub approvers: Vec<String>,
    pub mode: ApprovalMode,
    pub preview: Vec<String>,
    pub created_at: String,
    pub expires_at: String,
    pub status: Status,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decided_via: Option<String>,
    pub note: Option<String>,
    pub executed_at: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
    pub notification: Option<String>,
    /// Unix milliseconds of `created_at`, `expires_at` and `decided_at`,
    /// for relative times on the pages ("in 8 min", "3 min ago").
    #[serde(skip)]
    pub created_ms: u64,
    #[serde(skip)]
    pub expires_ms: u64,
    #[serde(skip)]
    pub decided_ms: Option<u64>,
}

impl ApprovalRequest {
    pub fn view(&self) -> ApprovalView {
        ApprovalView {
            id: self.id.clone(),
            identity: self.identity.clone(),
            role: self.role.clone(),
            grant: self.grant.clone(),
            session: self.session,
            client_addr: self.client_addr.clone(),
            database: self.database.clone(),
            statement: self.statement.clone(),
            statement_hash: self.statement_hash.clone(),
            params: self.params.clone(),
            upstream_user: self.upstream_user.clone(),
            kind: self.kind.clone(),
            grant_reason: self.grant_reason.clone(),
            class: self.class,
            tables: self.tables.clone(),
            rule: self.rule.clone(),
            reason: self.reason.clone(),
            approvers: self.approvers.clone(),
            mode: self.mode,
            preview: self.preview.clone(),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            status: self.status,
            decided_by: self.decided_by.clone(),
            decided_at: self.decided_at.map(rfc3339),
            decided_via: self.decided_via.clone(),
            note: self.note.clone(),
            executed_at: self.executed_at.map(rfc3339),
            outcome: self.outcome.clone(),
            notification: self.notification.clone(),
            created_ms: self.created_at,
            expires_ms: self.expires_at,
            decided_ms: self.decided_at,
        }
    }
}

/// What an approval is bound to: one identity in one role, on one
/// database as one PostgreSQL user, for one text with one set of parameter
/// values (see [`Binding::hash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub identity: String,
    pub role: String,
    pub database: String,
    pub upstream_user: String,
    /// [`statement_hash`] of a simple query's text, or [`bound_hash`] of a
    /// prepared statement's text and its parameters.
    pub hash: String,
}

impl Binding {
    pub(super) fn matches(&self, r: &ApprovalRequest) -> bool {
        r.identity == self.identity
            && r.role == self.role
            && r.database == self.database
            && r.upstream_user == self.upstream_user
            && r.statement_hash == self.hash
    }
}

/// What a session knows when it asks.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub binding: Binding,
    pub grant: String,
    pub session: u64,
    pub client_addr: String,
    /// The exact text (stored redacted).
    pub statement: String,
    /// Parameter values as shown to approvers (already redacted).
    pub params: Vec<String>,
    pub kind: String,
    pub grant_reason: Option<String>,
    pub class: Class,
    pub tables: Vec<String>,
    pub rule: String,
    pub reason: String,
    pub approvers: Vec<String>,
    pub mode: ApprovalMode,
    pub preview: Vec<String>,
}

/// Hex SHA-256 of a statement's exact text.
pub fn statement_hash(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Parameter values of a `Bind`, with each one's format (`true`: binary).
pub type Values<'a> = &'a [(bool, Option<&'a [u8]>)];

/// What an approval of a prepared statement is bound to: hex SHA-256 of
/// its text, the parameter types it was prepared with, and each
/// parameter's format and bytes. Without types or values it is
/// [`statement_hash`], so an approval of the same text as a simple query
/// covers it.
pub fn bound_hash(sql: &str, types: &[u32], values: Values<'_>) -> String {
    if values.is_empty() && types.iter().all(|&t| t == 0) {
        return statement_hash(sql);
    }
    let mut h = Sha256::new();
    h.update(sql.as_bytes());
    h.update([0u8]);
    h.update((types.len() as u64).to_be_bytes());
    for t in types {
        h.update(t.to_be_bytes());
    }
    for (binary, v) in values {
        h.update([0u8, u8::from(*binary)]);
        match v {
            Some(v) => {
                h.update((v.len() as u64).to_be_bytes());
                h.update(v);
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    hex::encode(h.finalize())
}
