//! The risk checker behind `veilctl check` and the console's page of the
//! same name: classify a string and, for an identity, judge it in each
//! role the identity may hold. Offline: policies only, no database.

use std::sync::Arc;

use crate::classify::Analysis;
use crate::policy::{Action, Engine, PolicyError, PolicySet, Prepared, Verdict};

/// Why a check could not judge.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("identity {0} is not defined in the policies")]
    UnknownIdentity(String),
    #[error("identity {0} may hold no role; name one")]
    NoRole(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub analysis: Analysis,
    /// With an identity: its best outcome across roles, and every role's.
    pub decided: Option<Decided>,
}

#[derive(Debug, Clone)]
pub struct Decided {
    pub identity: String,
    /// The role with the best outcome, and its verdict.
    pub role: String,
    pub verdict: Verdict,
    /// Each role judged (one when a role was named).
    pub roles: Vec<(String, Verdict)>,
}

/// Classify `sql`; with `identity`, judge it as that identity in `role`,
/// or in each role it holds or may be granted.
pub fn check(
    set: Arc<PolicySet>,
    sql: &str,
    identity: Option<&str>,
    role: Option<&str>,
) -> Result<Checked, CheckError> {
    let analysis = crate::classify::classify(sql);
    let Some(identity) = identity else {
        return Ok(Checked {
            analysis,
            decided: None,
        });
    };
    let Some(ident) = set.identity(identity) else {
        return Err(CheckError::UnknownIdentity(identity.to_owned()));
    };
    let roles: Vec<String> = match role {
        Some(r) => vec![r.to_owned()],
        None => ident
            .standing
            .iter()
            .chain(ident.roles.iter())
            .cloned()
            .collect(),
    };
    let engine = Engine::uncached(set)?;
    let roles: Vec<(String, Verdict)> = roles
        .into_iter()
        .map(|r| {
            let v = engine
                .judge(identity, &r, &analysis, &Prepared::default())
                .overall;
            (r, v)
        })
        .collect();
    // Across roles, the best outcome is what the identity could do.
    let rank = |a: Action| match a {
        Action::Allow => 0,
        Action::Hold => 1,
        Action::Deny => 2,
    };
    let Some((role, verdict)) = roles.iter().min_by_key(|(_, v)| rank(v.action)).cloned() else {
        return Err(CheckError::NoRole(identity.to_owned()));
    };
    Ok(Checked {
        analysis,
        decided: Some(Decided {
            identity: identity.to_owned(),
            role,
            verdict,
            roles,
        }),
    })
}
