//! The inventory as text, as `veilctl blast-radius` and `veilctl access
//! review` print it and the web console shows it: one renderer for both.

use crate::cli::Table;
use crate::inventory::compare::{Decision, FindingKind};
use crate::inventory::radius::{Access, BlastRadius, RoleRadius};
use crate::inventory::review::AccessReview;

/// `veilctl blast-radius`: a summary per role, then each role's details.
pub fn blast_radius(r: &BlastRadius) -> String {
    let mut out = format!(
        "{} ({}), database {}\n",
        r.identity,
        serde_name(&r.kind),
        r.database
    );
    if r.roles.is_empty() {
        out.push_str("  holds no role and may be granted none\n");
    }
    for line in &r.summary {
        out.push_str(&format!("  {line}\n"));
    }
    for role in &r.roles {
        out.push('\n');
        out.push_str(&details(role));
    }
    out
}

fn details(r: &RoleRadius) -> String {
    let access = match r.access {
        Access::Held => {
            let grants: Vec<String> = r
                .grants
                .iter()
                .map(|g| {
                    format!(
                        "{} until {}, issued by {}{}",
                        g.id,
                        g.expires_at.as_deref().unwrap_or("-"),
                        g.issued_by,
                        g.reason
                            .as_deref()
                            .map_or(String::new(), |x| format!(": {x}"))
                    )
                })
                .collect();
            format!("held ({})", grants.join("; "))
        }
        Access::Standing => "standing (no grant needed)".to_owned(),
        Access::Dev => {
            "development credential (a standing secret from the daemon's config)".to_owned()
        }
        Access::Grantable => format!(
            "may be granted{}",
            r.max_ttl
                .as_deref()
                .map_or(String::new(), |t| format!(", max_ttl {t}"))
        ),
    };
    let mut out = format!("role {}: {access}\n", r.role);
    out.push_str(&format!(
        "  upstream user {}; tables {}; safe functions {}\n",
        r.upstream_user,
        if r.tables.is_empty() {
            "any".to_owned()
        } else {
            r.tables.join(", ")
        },
        if r.safe_functions.is_empty() {
            "none".to_owned()
        } else {
            r.safe_functions.join(", ")
        }
    ));
    if let Some(limit) = super::radius::row_limits(r) {
        out.push_str(&format!(
            "  row limits: a write the planner expects to change {limit} counts as destructive\n"
        ));
    }
    let mut classes = Table::new(&["  CLASS", "DECISION", "RULE", "APPROVERS"]);
    for c in &r.classes {
        let approvers = match (&c.approvers[..], c.mode) {
            ([], _) => String::new(),
            (a, Some(m)) => format!("{} ({})", a.join(", "), serde_name(&m)),
            (a, None) => a.join(", "),
        };
        classes.row(vec![
            format!("  {}", c.class),
            decision(c.decision).to_owned(),
            c.rule.clone(),
            approvers,
        ]);
    }
    out.push_str(&classes.to_string());
    out.push_str(&postgres(r));
    out
}

fn postgres(r: &RoleRadius) -> String {
    let Some(pg) = &r.postgres else {
        return format!(
            "  PostgreSQL: {}\n",
            r.postgres_error.as_deref().unwrap_or("not read")
        );
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!(
        "  PostgreSQL as {}: superuser {}, bypassrls {}, createrole {}, createdb {}; member of {}; may create in {}\n",
        pg.user,
        yes(pg.superuser),
        yes(pg.bypassrls),
        yes(pg.createrole),
        yes(pg.createdb),
        none_if_empty(&pg.member_of),
        none_if_empty(&pg.create_in_schemas),
    );
    let mut t = Table::new(&[
        "  TABLE",
        "ROWS",
        "SIZE",
        "READ/WRITE/DDL/DESTRUCTIVE",
        "POSTGRES GRANTS",
    ]);
    for reach in r
        .reach
        .iter()
        .filter(|t| !t.postgres.is_empty() || t.policy.values().any(|d| *d != Decision::Deny))
    {
        let policy: Vec<&str> = reach.policy.values().map(|d| decision(*d)).collect();
        t.row(vec![
            format!("  {}", reach.table),
            reach
                .rows_estimate
                .map_or("?".to_owned(), |n| format!("~{n}")),
            size(reach.size_bytes),
            policy.join("/"),
            if reach.postgres.is_empty() {
                "-".to_owned()
            } else {
                reach.postgres.join(",")
            },
        ]);
    }
    out.push_str(&t.to_string());
    if pg.tables_truncated {
        out.push_str("  (only the first tables are listed; see --output json)\n");
    }
    if r.findings.is_empty() {
        out.push_str("  no flags: PostgreSQL and the policy agree\n");
    }
    for f in &r.findings {
        let mark = match f.kind {
            FindingKind::PostgresAllowsMore => "! PostgreSQL allows more:",
            FindingKind::PolicyAllowsRefused => "? PostgreSQL refuses:",
        };
        out.push_str(&format!("  {mark} {}\n", f.message));
    }
    out
}

fn decision(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Hold => "hold",
        Decision::Deny => "deny",
    }
}

fn none_if_empty(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

fn size(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{} kB", b >> 10),
        b => format!("{b} B"),
    }
}

/// A unit enum's serde name.
pub fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `veilctl access review`: identities, grants and roles.
pub fn access_review(r: &AccessReview) -> String {
    let f = &r.findings;
    let mut out = format!(
        "access review {} (audit since {}, {} days)\n  {} identities; {} with standing access; {} unused grant(s); {} idle role(s); {} never logged in\n\n",
        r.generated_at,
        r.since,
        r.window_days,
        r.identities.len(),
        f.standing.len(),
        f.unused_grants.len(),
        f.idle_roles.len(),
        f.never_logged_in.len(),
    );
    let mut t = Table::new(&[
        "IDENTITY",
        "KIND",
        "MAY HOLD",
        "STANDING",
        "ACTIVE GRANTS",
        "LAST LOGIN",
        "LAST STATEMENT",
    ]);
    for i in &r.identities {
        let active: Vec<String> = i
            .grants
            .iter()
            .filter(|g| serde_name(&g.status) == "active")
            .map(|g| {
                format!(
                    "{} {}{}",
                    g.id,
                    g.role,
                    if g.first_used.is_none() {
                        " (unused)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        t.row(vec![
            i.identity.clone(),
            serde_name(&i.kind),
            dash(&i.roles.join(",")),
            dash(&i.standing_access().join(",")),
            dash(&active.join(", ")),
            i.last_login
                .as_ref()
                .map_or("never".to_owned(), |s| format!("{} as {}", s.at, s.role)),
            i.last_statement.as_ref().map_or("-".to_owned(), |s| {
                format!(
                    "{} {} ({})",
                    s.at,
                    s.class.as_deref().unwrap_or("?"),
                    s.decision.as_deref().unwrap_or("?")
                )
            }),
        ]);
    }
    out.push_str(&t.to_string());
    let mut grants = Table::new(&[
        "GRANT",
        "IDENTITY",
        "ROLE",
        "STATUS",
        "ISSUED BY",
        "EXPIRES",
        "USED",
        "REASON",
    ]);
    for i in &r.identities {
        for g in &i.grants {
            grants.row(vec![
                g.id.clone(),
                i.identity.clone(),
                g.role.clone(),
                serde_name(&g.status),
                g.issued_by.clone(),
                dash(g.expires_at.as_deref().unwrap_or("")),
                g.first_used.clone().unwrap_or_else(|| "never".to_owned()),
                dash(g.reason.as_deref().unwrap_or("")),
            ]);
        }
    }
    out.push('\n');
    out.push_str(&grants.to_string());
    let mut roles = Table::new(&["ROLE", "UPSTREAM USER", "HOLDERS", "LAST USED"]);
    for role in &r.roles {
        roles.row(vec![
            role.role.clone(),
            role.upstream_user.clone(),
            dash(&role.holders.join(",")),
            role.last_used
                .clone()
                .unwrap_or_else(|| format!("not in {} days", r.window_days)),
        ]);
    }
    out.push('\n');
    out.push_str(&roles.to_string());
    out
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}
