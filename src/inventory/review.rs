//! `veilctl access review`: the inventory for a periodic access review.
//! Every identity in the policies with its kind, the roles it may hold,
//! standing access, its grants (who issued them, why, until when, whether
//! they were ever used) and its last login and statement from the audit
//! log; then roles nobody used in the window and identities that never
//! logged in. Pure over its inputs; [`usage::scan`](super::usage::scan)
//! reads the log.

use serde::{Deserialize, Serialize};

use super::usage::{Seen, Usage};
use crate::grants::{Grant, GrantStatus};
use crate::policy::{Kind, PolicySet};
use crate::time::rfc3339;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessReview {
    pub generated_at: String,
    /// The audit window looked at, in days, and where it starts.
    pub window_days: u64,
    pub since: String,
    pub identities: Vec<IdentityReview>,
    pub roles: Vec<RoleReview>,
    /// What `--fail-on` can trip on.
    pub findings: Findings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityReview {
    pub identity: String,
    pub kind: Kind,
    /// Roles it may be granted.
    pub roles: Vec<String>,
    /// Its standing role (services only).
    pub standing: Option<String>,
    /// Roles it holds through the daemon's development credentials:
    /// standing secrets that bypass grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dev_credentials: Vec<String>,
    /// Grants active now, and those that ended inside the window.
    pub grants: Vec<GrantReview>,
    pub last_login: Option<Seen>,
    pub last_statement: Option<Seen>,
    pub logins: u64,
    pub statements: u64,
    pub never_logged_in: bool,
}

impl IdentityReview {
    /// Its standing role and `dev:ROLE` for each development credential.
    pub fn standing_access(&self) -> Vec<String> {
        self.standing
            .iter()
            .cloned()
            .chain(self.dev_credentials.iter().map(|r| format!("dev:{r}")))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantReview {
    pub id: String,
    pub role: String,
    pub status: GrantStatus,
    pub issued_at: String,
    pub issued_by: String,
    pub reason: Option<String>,
    pub expires_at: Option<String>,
    /// First login with it, if any.
    pub first_used: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleReview {
    pub role: String,
    pub upstream_user: String,
    /// Identities that may be granted it or hold it standing.
    pub holders: Vec<String>,
    pub last_used: Option<String>,
    /// Nobody logged in or ran a statement in it in the window.
    pub unused: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Findings {
    /// `identity: role` for every standing access (standing roles and
    /// development credentials).
    pub standing: Vec<String>,
    /// Grants (active, or ended in the window) never used to log in.
    pub unused_grants: Vec<String>,
    /// Roles nobody used in the window.
    pub idle_roles: Vec<String>,
    /// Identities in the policies with no login in the window.
    pub never_logged_in: Vec<String>,
}

/// What `--fail-on` accepts.
pub const FAIL_ON: [&str; 3] = ["standing", "unused", "idle"];

impl Findings {
    /// The `--fail-on` keys among `keys` that have findings. `unused` is
    /// grants never used; `idle` is idle roles and identities that never
    /// logged in.
    pub fn tripped<'a>(&self, keys: &[&'a str]) -> Vec<&'a str> {
        keys.iter()
            .copied()
            .filter(|k| match *k {
                "standing" => !self.standing.is_empty(),
                "unused" => !self.unused_grants.is_empty(),
                "idle" => !self.idle_roles.is_empty() || !self.never_logged_in.is_empty(),
                _ => false,
            })
            .collect()
    }
}

/// Grants worth reviewing: active ones, and those that ended (expired or
/// revoked) at or after `since_ms`.
pub fn in_window(grant: &Grant, now: u64, since_ms: u64) -> bool {
    match grant.status(now) {
        GrantStatus::Active => true,
        GrantStatus::Revoked => grant.revoked.as_ref().is_some_and(|r| r.at >= since_ms),
        GrantStatus::Expired => grant.expires_at.is_some_and(|e| e >= since_ms),
    }
}

/// What the review is made of besides the policies.
pub struct Input<'a> {
    /// Every stored grant.
    pub grants: &'a [Grant],
    /// The daemon's development credentials, as (identity, role).
    pub dev: &'a [(String, String)],
    /// The log from the earlier of the window's start and the oldest grant
    /// reviewed.
    pub usage: &'a Usage,
}

/// Put the review together.
pub fn build(
    set: &PolicySet,
    input: &Input<'_>,
    now: u64,
    window_days: u64,
    since_ms: u64,
) -> AccessReview {
    let (grants, usage) = (input.grants, input.usage);
    let mut findings = Findings::default();
    for (who, role) in input.dev {
        let note = if set.identity(who).is_some() {
            ""
        } else {
            "; identity not in the policies"
        };
        findings
            .standing
            .push(format!("{who}: {role} (development credential{note})"));
    }
    let mut identities = Vec::new();
    for (name, ident) in &set.identities {
        let mut mine: Vec<&Grant> = grants
            .iter()
            .filter(|g| g.identity == *name && in_window(g, now, since_ms))
            .collect();
        mine.sort_by_key(|g| std::cmp::Reverse(g.issued_at));
        let grants: Vec<GrantReview> = mine
            .into_iter()
            .map(|g| GrantReview {
                id: g.id.clone(),
                role: g.role.clone(),
                status: g.status(now),
                issued_at: rfc3339(g.issued_at),
                issued_by: g.issued_by.clone(),
                reason: g.reason.clone(),
                expires_at: g.expires_at.map(rfc3339),
                first_used: usage.grants_used.get(&g.id).cloned(),
            })
            .collect();
        for g in grants.iter().filter(|g| g.first_used.is_none()) {
            findings
                .unused_grants
                .push(format!("{} ({name}, {})", g.id, g.role));
        }
        if let Some(s) = &ident.standing {
            findings.standing.push(format!("{name}: {s}"));
        }
        let used = usage.identities.get(name);
        let never = used.is_none_or(|u| u.logins == 0);
        if never {
            findings.never_logged_in.push(name.clone());
        }
        identities.push(IdentityReview {
            identity: name.clone(),
            kind: ident.kind,
            roles: ident.roles.clone(),
            standing: ident.standing.clone(),
            dev_credentials: input
                .dev
                .iter()
                .filter(|(who, _)| who == name)
                .map(|(_, role)| role.clone())
                .collect(),
            grants,
            last_login: used.and_then(|u| u.last_login.clone()),
            last_statement: used.and_then(|u| u.last_statement.clone()),
            logins: used.map_or(0, |u| u.logins),
            statements: used.map_or(0, |u| u.statements),
            never_logged_in: never,
        });
    }
    let roles = set
        .roles
        .iter()
        .map(|(name, role)| {
            let holders = set
                .identities
                .iter()
                .filter(|(_, i)| i.roles.contains(name) || i.standing.as_ref() == Some(name))
                .map(|(n, _)| n.clone())
                .collect();
            let last_used = usage.roles_used.get(name).cloned();
            if last_used.is_none() {
                findings.idle_roles.push(name.clone());
            }
            RoleReview {
                role: name.clone(),
                upstream_user: role.upstream_user.clone(),
                holders,
                unused: last_used.is_none(),
                last_used,
            }
        })
        .collect();
    AccessReview {
        generated_at: rfc3339(now),
        window_days,
        since: rfc3339(since_ms),
        identities,
        roles,
        findings,
    }
}

/// One CSV row per identity, for a spreadsheet.
pub fn csv(review: &AccessReview) -> String {
    let mut out = String::from(
        "identity,kind,may_hold,standing,grants,unused_grants,last_login,last_login_role,last_statement,last_statement_class,logins,statements,never_logged_in\n",
    );
    for i in &review.identities {
        let grants: Vec<String> = i
            .grants
            .iter()
            .map(|g| {
                format!(
                    "{} {} {} by {} until {}{}",
                    g.id,
                    g.role,
                    serde_plain(&g.status),
                    g.issued_by,
                    g.expires_at.as_deref().unwrap_or("-"),
                    g.reason
                        .as_deref()
                        .map_or(String::new(), |r| format!(" ({r})"))
                )
            })
            .collect();
        let unused: Vec<&str> = i
            .grants
            .iter()
            .filter(|g| g.first_used.is_none())
            .map(|g| g.id.as_str())
            .collect();
        let fields = [
            i.identity.clone(),
            serde_plain(&i.kind),
            i.roles.join(";"),
            i.standing_access().join(";"),
            grants.join("; "),
            unused.join(";"),
            i.last_login
                .as_ref()
                .map(|s| s.at.clone())
                .unwrap_or_default(),
            i.last_login
                .as_ref()
                .map(|s| s.role.clone())
                .unwrap_or_default(),
            i.last_statement
                .as_ref()
                .map(|s| s.at.clone())
                .unwrap_or_default(),
            i.last_statement
                .as_ref()
                .and_then(|s| s.class.clone())
                .unwrap_or_default(),
            i.logins.to_string(),
            i.statements.to_string(),
            i.never_logged_in.to_string(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// A unit enum variant's serde name (`"human"` → `human`).
fn serde_plain<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// RFC 4180 quoting, and a leading `=`, `+`, `-`, `@` defused so a
/// spreadsheet does not run a reason someone typed as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }

    #[test]
    fn fail_on_trips_only_what_has_findings() {
        let f = Findings {
            standing: vec!["billing-svc: billing".into()],
            ..Findings::default()
        };
        assert_eq!(f.tripped(&["standing", "unused"]), vec!["standing"]);
        assert!(f.tripped(&["unused", "idle"]).is_empty());
    }
}
