//! The inspection seam: every statement a client sends (simple `Query`,
//! extended `Parse`, `FunctionCall`) passes through one [`Inspector`] call that
//! returns a [`Decision`] before anything is forwarded upstream.

use crate::classify::{Class, SessionEffect};
use crate::policy::{ApprovalMode, PolicyError, PolicySet, PreparedClasses};
use crate::protocol::PgError;

/// Who is asking, for the inspector and for logs.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    pub identity: String,
    pub role: String,
    pub credential_id: String,
    pub client_addr: std::net::SocketAddr,
    pub tls: bool,
    /// The database the client connected to (previews run there).
    pub database: String,
    /// That database's user-defined objects, read when the session began.
    pub objects: std::sync::Arc<crate::classify::objects::UserObjects>,
}

#[cfg(test)]
impl SessionInfo {
    /// A session of `identity` as `role` on database `app`, for unit tests.
    pub(crate) fn for_test(identity: &str, role: &str) -> SessionInfo {
        SessionInfo {
            id: 7,
            identity: identity.into(),
            role: role.into(),
            credential_id: "g1".into(),
            client_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 5000)),
            tls: true,
            database: "app".into(),
            objects: Default::default(),
        }
    }
}

/// Which protocol message carried the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    SimpleQuery,
    Parse { statement: &'a str },
}

/// What happens to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the client gets this error (SQLSTATE 42501 for policy denials).
    Deny(PgError),
    /// Needs a human's approval.
    Hold(Box<Held>),
}

/// What a held statement needs for its approval request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub class: Class,
    /// The rule that held it, e.g. `roles.deployer.approve`.
    pub rule: String,
    pub reason: String,
    /// Tables the statement touches, `schema.name`.
    pub tables: Vec<String>,
    /// The same tables with schema and name apart (a name may hold a dot).
    pub relations: Vec<crate::classify::TableName>,
    /// Who may approve (never the requester).
    pub approvers: Vec<String>,
    pub mode: ApprovalMode,
    /// What the client gets when no approval can be asked for.
    pub error: PgError,
}

/// A decision and the class of the statement it is about (`None` when the
/// inspector does not classify), for metrics and the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub decision: Decision,
    pub class: Option<Class>,
    /// The rule that decided, e.g. `roles.readonly.allow`.
    pub rule: Option<String>,
    /// Tables the statement touches, `schema.name`.
    pub tables: Vec<String>,
    /// Per statement of the string, in order: what it does to the
    /// session's prepared statements and portals (for the session model).
    /// Empty when none of them changes any.
    pub effects: Vec<Defines>,
    /// Shown that a rollback undoes everything it does (no sequence,
    /// `dblink`, trigger, rule or foreign table in reach): inside a
    /// transaction block it may go upstream before its record is durable.
    /// False when not known.
    pub rollback_undoes: bool,
    /// The role limits how many rows a write may change: the proxy plans
    /// the statements first, and over a limit the decision is this check's.
    pub row_check: Option<std::sync::Arc<crate::policy::limits::RowCheck>>,
}

/// What one statement does to the session's names, and how the policy
/// judged the statement it defines (for `PREPARE` and `DECLARE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defines {
    pub what: SessionEffect,
    pub class: Class,
    /// For a hold: each execution of the defined statement needs an
    /// approval (defining it runs nothing).
    pub decision: Decision,
}

impl From<Decision> for Inspection {
    fn from(decision: Decision) -> Inspection {
        Inspection {
            decision,
            class: None,
            rule: None,
            tables: Vec::new(),
            effects: Vec::new(),
            rollback_undoes: false,
            row_check: None,
        }
    }
}

impl Decision {
    /// What was decided, without the details (as the audit log keeps it).
    pub fn action(&self) -> crate::policy::Action {
        use crate::policy::Action;
        match self {
            Decision::Allow => Action::Allow,
            Decision::Deny(_) => Action::Deny,
            Decision::Hold(_) => Action::Hold,
        }
    }

    /// A policy denial naming the rule that denied it.
    pub fn deny(rule: &str, reason: impl Into<String>) -> Decision {
        Decision::Deny(PgError::denied_by_rule(rule, reason))
    }
}

/// Decides about statements. Implementations must be cheap: this runs on the
/// hot path of every statement.
pub trait Inspector: Send + Sync + 'static {
    fn inspect(
        &self,
        session: &SessionInfo,
        prepared: &dyn PreparedClasses,
        sql: &str,
        origin: Origin<'_>,
    ) -> Inspection;

    /// New policies were loaded (at start and on SIGHUP). An error keeps
    /// the previous ones.
    fn reload(&self, _policies: std::sync::Arc<PolicySet>) -> Result<(), PolicyError> {
        Ok(())
    }

    /// The policies this inspector decides by, if it holds them. The
    /// firewall then reads roles and identities from here too, so what
    /// logins see and what statements are judged by change in one swap.
    fn policies(&self) -> Option<std::sync::Arc<PolicySet>> {
        None
    }
}

/// Allows everything (the seam before the policy engine is attached).
#[derive(Debug, Default)]
pub struct AllowAll;

impl Inspector for AllowAll {
    fn inspect(
        &self,
        _: &SessionInfo,
        _: &dyn PreparedClasses,
        _: &str,
        _: Origin<'_>,
    ) -> Inspection {
        Decision::Allow.into()
    }
}

/// Denies statements containing a marker string; for tests of the seam.
#[derive(Debug)]
pub struct DenyContaining(pub String);

impl Inspector for DenyContaining {
    fn inspect(
        &self,
        _: &SessionInfo,
        _: &dyn PreparedClasses,
        sql: &str,
        _: Origin<'_>,
    ) -> Inspection {
        if sql.contains(&self.0) {
            Decision::deny(
                "test.deny_containing",
                format!("statement contains {:?}", self.0),
            )
            .into()
        } else {
            Decision::Allow.into()
        }
    }
}
