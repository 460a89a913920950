//! `veilctl blast-radius`: what one identity could do right now and at
//! most. For each role it holds (an active grant, or standing access) and,
//! marked apart, each role it may be granted: per class allow / hold /
//! deny, the table scope and safe functions, then the same intersected with
//! what PostgreSQL grants the role's upstream user ([`super::catalog`]),
//! with the flags of [`super::compare`]. A one-line summary per role leads.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::InventoryError;
use super::catalog::{self, PgUser};
use super::compare::{self, Decision, Finding, FindingKind, TableReach};
use crate::classify::Class;
use crate::grants::{GrantStatus, GrantView};
use crate::policy::{ApprovalMode, Engine, Kind, PolicySet, default_mode};
use crate::upstream::UpstreamConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// An active grant.
    Held,
    /// A service's standing role: held without a grant.
    Standing,
    /// A development credential from the daemon's config: a standing
    /// secret that bypasses grants.
    Dev,
    /// Not held now; the identity may be granted it.
    Grantable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlastRadius {
    pub identity: String,
    pub kind: Kind,
    pub database: String,
    /// One line per role, held roles first.
    pub summary: Vec<String>,
    pub roles: Vec<RoleRadius>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldGrant {
    pub id: String,
    pub expires_at: Option<String>,
    pub issued_by: String,
    pub reason: Option<String>,
}

/// The policy's answer for one class in one role (scope aside).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassRule {
    pub class: Class,
    pub decision: Decision,
    /// The rule that decides, e.g. `roles.agent.approve` or `kinds.agent`.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ApprovalMode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRadius {
    pub role: String,
    pub access: Access,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<HeldGrant>,
    pub max_ttl: Option<String>,
    pub upstream_user: String,
    pub classes: Vec<ClassRule>,
    /// The role's `tables` scope; empty: every table.
    pub tables: Vec<String>,
    pub safe_functions: Vec<String>,
    /// Row-estimate holds: writes the planner sizes over these count as
    /// destructive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_fraction: Option<f64>,
    /// What PostgreSQL grants the upstream user, when it could be read.
    pub postgres: Option<PgUser>,
    /// Why it could not be read.
    pub postgres_error: Option<String>,
    /// Per table: policy and PostgreSQL side by side.
    pub reach: Vec<TableReach>,
    pub findings: Vec<Finding>,
    pub summary: String,
}

/// The policy side of every role `identity` holds or may be granted (just
/// `only`, when given). `active` are the grants usable now, `dev` the
/// daemon's development credentials as (identity, role).
pub fn policy_side(
    set: &Arc<PolicySet>,
    engine: &Engine,
    identity: &str,
    only: Option<&str>,
    held: &Held<'_>,
) -> Result<Vec<RoleRadius>, InventoryError> {
    let active = held.grants;
    let ident = set
        .identity(identity)
        .ok_or_else(|| InventoryError::UnknownIdentity(identity.to_owned()))?;
    let mut names: Vec<(String, Access)> = Vec::new();
    let mut push = |name: &str, access: Access| {
        if !names.iter().any(|(n, _)| n == name) {
            names.push((name.to_owned(), access));
        }
    };
    if let Some(s) = &ident.standing {
        push(s, Access::Standing);
    }
    for (who, role) in held.dev {
        if who == identity {
            push(role, Access::Dev);
        }
    }
    for g in active {
        // A grant the policies no longer back logs in no more.
        if g.identity == identity
            && g.status == GrantStatus::Active
            && crate::grants::still_permitted(set, identity, &g.role).is_ok()
        {
            push(&g.role, Access::Held);
        }
    }
    for r in &ident.roles {
        push(r, Access::Grantable);
    }
    if let Some(only) = only {
        names.retain(|(n, _)| n == only);
        if names.is_empty() {
            let mut roles: Vec<&str> = ident.roles.iter().map(String::as_str).collect();
            roles.extend(ident.standing.as_deref());
            return Err(InventoryError::NotItsRole {
                identity: identity.to_owned(),
                role: only.to_owned(),
                roles: if roles.is_empty() {
                    "none".to_owned()
                } else {
                    roles.join(", ")
                },
            });
        }
    }
    let mut out = Vec::new();
    for (name, access) in names {
        // A dev credential for a role the policies do not define.
        let Some(role) = set.role(&name) else {
            continue;
        };
        let classes = Class::ALL
            .iter()
            .map(|&class| {
                let v = engine.decide_class(identity, &name, class, &[]);
                let decision = Decision::from(v.action);
                ClassRule {
                    class,
                    decision,
                    rule: v.rule,
                    mode: (decision == Decision::Hold)
                        .then(|| role.mode.unwrap_or(default_mode(ident.kind))),
                    approvers: v.approvers,
                }
            })
            .collect();
        let grants = active
            .iter()
            .filter(|g| g.identity == identity && g.role == name)
            .map(|g| HeldGrant {
                id: g.id.clone(),
                expires_at: g.expires_at.clone(),
                issued_by: g.issued_by.clone(),
                reason: g.reason.clone(),
            })
            .collect();
        out.push(RoleRadius {
            role: name,
            access,
            grants,
            max_ttl: role.max_ttl.clone(),
            upstream_user: role.upstream_user.clone(),
            classes,
            tables: role.tables.clone(),
            safe_functions: role.safe_functions.clone(),
            max_rows: role.max_rows,
            max_rows_fraction: role.max_rows_fraction,
            postgres: None,
            postgres_error: None,
            reach: Vec::new(),
            findings: Vec::new(),
            summary: String::new(),
        });
    }
    Ok(out)
}

/// What an identity holds besides policy: grants usable now and the
/// daemon's development credentials, as (identity, role).
pub struct Held<'a> {
    pub grants: &'a [GrantView],
    pub dev: &'a [(String, String)],
}

/// Add PostgreSQL's side (or why it is missing) and the summary.
pub fn attach(engine: &Engine, identity: &str, r: &mut RoleRadius, pg: Result<PgUser, String>) {
    match pg {
        Ok(pg) => {
            let (reach, mut findings) = compare::intersect(engine, identity, &r.role, &pg);
            findings.extend(compare::empty_patterns(&r.tables, &pg));
            r.reach = reach;
            r.findings = findings;
            r.postgres = Some(pg);
        }
        Err(e) => r.postgres_error = Some(e),
    }
    r.summary = summarize(identity, r);
}

/// The whole report: the policy side, then one catalog look per upstream
/// user (shared by roles that log in as the same one).
pub async fn blast_radius(
    set: Arc<PolicySet>,
    upstream: &UpstreamConnector,
    database: &str,
    identity: &str,
    only: Option<&str>,
    held: &Held<'_>,
) -> Result<BlastRadius, InventoryError> {
    let engine = Engine::uncached(set.clone())?;
    let mut roles = policy_side(&set, &engine, identity, only, held)?;
    let kind = set
        .identity(identity)
        .map(|i| i.kind)
        .ok_or_else(|| InventoryError::UnknownIdentity(identity.to_owned()))?;
    let mut seen: BTreeMap<String, Result<PgUser, String>> = BTreeMap::new();
    for r in &mut roles {
        if !seen.contains_key(&r.upstream_user) {
            let got = catalog::inspect(upstream, &r.upstream_user, database)
                .await
                .map_err(|e| {
                    format!(
                        "cannot read what PostgreSQL lets {} do in database {database}: {e}",
                        r.upstream_user
                    )
                });
            seen.insert(r.upstream_user.clone(), got);
        }
        let pg = seen
            .get(&r.upstream_user)
            .cloned()
            .unwrap_or_else(|| Err("not read".to_owned()));
        attach(&engine, identity, r, pg);
    }
    Ok(BlastRadius {
        identity: identity.to_owned(),
        kind,
        database: database.to_owned(),
        summary: roles.iter().map(|r| r.summary.clone()).collect(),
        roles,
    })
}

/// "ops-agent, as agent until 14:05: reads 12 tables (about 3.1M rows);
/// writes held for oncall; cannot drop anything; PostgreSQL would let
/// app_write TRUNCATE 4 tables the policy denies destructive statements on".
pub fn summarize(identity: &str, r: &RoleRadius) -> String {
    let head = match r.access {
        Access::Held => {
            let until = r
                .grants
                .iter()
                .filter_map(|g| g.expires_at.as_deref())
                .max()
                .map_or(String::new(), |t| format!(" until {t}"));
            format!("{identity}, as {}{until}", r.role)
        }
        Access::Standing => format!("{identity}, as {} (standing)", r.role),
        Access::Dev => format!(
            "{identity}, as {} (development credential: a standing secret)",
            r.role
        ),
        Access::Grantable => format!(
            "{identity} may be granted {}{}",
            r.role,
            r.max_ttl
                .as_deref()
                .map_or(String::new(), |t| format!(" (max {t})"))
        ),
    };
    let mut parts = vec![reads(r)];
    for rule in &r.classes {
        if let Some(p) = phrase(rule) {
            parts.push(p);
        }
    }
    if let Some(limit) = row_limits(r) {
        parts.push(format!(
            "writes the planner expects to change {limit} count as destructive"
        ));
    }
    let more: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PostgresAllowsMore)
        .collect();
    if let Some(first) = more.first() {
        let extra = if more.len() > 1 {
            format!(" (and {} more flag(s) below)", more.len() - 1)
        } else {
            String::new()
        };
        parts.push(format!(
            "PostgreSQL would let {}{extra}",
            short(first, &r.upstream_user)
        ));
    }
    let refused = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PolicyAllowsRefused)
        .count();
    if refused > 0 {
        parts.push(format!(
            "{refused} place(s) where the policy lets through what PostgreSQL refuses"
        ));
    }
    if let Some(e) = &r.postgres_error {
        parts.push(format!("PostgreSQL side unknown ({e})"));
    }
    format!("{head}: {}", parts.join("; "))
}

/// "over 100 rows or 25% of a table", when the role limits rows.
pub fn row_limits(r: &RoleRadius) -> Option<String> {
    let rows = r.max_rows.map(|n| format!("{n} rows"));
    let share = r
        .max_rows_fraction
        .map(|f| format!("{}% of a table", f * 100.0));
    match (rows, share) {
        (Some(a), Some(b)) => Some(format!("over {a} or {b}")),
        (Some(a), None) | (None, Some(a)) => Some(format!("over {a}")),
        (None, None) => None,
    }
}

fn reads(r: &RoleRadius) -> String {
    let read = r.classes.iter().find(|c| c.class == Class::Read);
    if read.is_some_and(|c| c.decision == Decision::Deny) {
        return "cannot read".to_owned();
    }
    if r.postgres.is_none() {
        return if r.tables.is_empty() {
            "reads any table".to_owned()
        } else {
            format!("reads tables in {}", r.tables.join(", "))
        };
    }
    let readable: Vec<&TableReach> = r
        .reach
        .iter()
        .filter(|t| t.reachable.contains(&Class::Read))
        .collect();
    let rows: i64 = readable.iter().filter_map(|t| t.rows_estimate).sum();
    format!(
        "reads {} table(s) (about {} rows)",
        readable.len(),
        human(rows)
    )
}

/// What a class rule means in a sentence; `None` for the unremarkable
/// (privileged and unknown denied, reads said elsewhere).
fn phrase(rule: &ClassRule) -> Option<String> {
    let (noun, cannot) = match rule.class {
        Class::Read => return None,
        Class::Write => ("writes", "cannot write"),
        Class::Ddl => ("schema changes", "no schema changes"),
        Class::Destructive => ("drops and truncates", "cannot drop anything"),
        Class::Privileged => ("privileged statements", ""),
        Class::Unknown => ("statements infraveil cannot classify", ""),
    };
    match rule.decision {
        Decision::Allow => Some(format!("{noun} allowed")),
        Decision::Hold => Some(format!(
            "{noun} held for {}{}",
            rule.approvers.join(", "),
            match rule.mode {
                Some(ApprovalMode::Defer) => " (defer)",
                Some(ApprovalMode::Wait) => " (wait)",
                None => "",
            }
        )),
        Decision::Deny if cannot.is_empty() => None,
        Decision::Deny => Some(cannot.to_owned()),
    }
}

/// A finding in a few words: "app_write TRUNCATE 4 tables".
fn short(f: &Finding, user: &str) -> String {
    match (f.privilege.as_deref(), f.tables.len()) {
        (Some("owner"), n) if n > 0 => format!("{user} DROP {n} table(s) it owns"),
        (Some(p), n) if n > 0 => format!("{user} {p} {n} table(s)"),
        _ => f.message.clone(),
    }
}

/// 3100000 → "3.1M".
fn human(n: i64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}
