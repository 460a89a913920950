//! `veilctl access review`: every identity, its roles, standing access,
//! grants and last use, from the daemon; `--fail-on` makes it a gate for a
//! compliance job.

use anyhow::{Context, bail};
use clap::Subcommand;
use infraveil::inventory::review::{AccessReview, FAIL_ON, csv};
use serde::de::DeserializeOwned;

use crate::api::Api;
use crate::blast::serde_name;
use crate::table::Table;

#[derive(Subcommand)]
pub enum AccessCommand {
    /// The inventory for a periodic access review. Exits 1 when a
    /// `--fail-on` finding is present.
    Review {
        /// Fail (exit 1) on these findings: `standing` (standing access),
        /// `unused` (grants never used), `idle` (roles nobody used and
        /// identities that never logged in within --days).
        #[arg(long, value_delimiter = ',')]
        fail_on: Vec<String>,
        /// The audit window: roles unused this long are idle.
        #[arg(long, default_value_t = 90)]
        days: u64,
    },
}

/// A GET with query parameters, decoded from JSON.
pub fn get_json<T: DeserializeOwned>(
    api: &Api,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<T> {
    api.get_stream(path, query)?
        .json()
        .context("the admin API answered something veilctl does not understand (version mismatch?)")
}

/// Returns the exit code.
pub fn run(api: &Api, command: &AccessCommand, format: crate::Output) -> anyhow::Result<i32> {
    let AccessCommand::Review { fail_on, days } = command;
    let keys: Vec<&str> = fail_on
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = keys.iter().find(|k| !FAIL_ON.contains(k)) {
        bail!(
            "--fail-on {bad:?}: use one or more of {}",
            FAIL_ON.join(", ")
        );
    }
    let review: AccessReview = get_json(
        api,
        "/v1/inventory/access-review",
        &[("days", days.to_string())],
    )?;
    match format {
        crate::Output::Json => println!("{}", serde_json::to_string_pretty(&review)?),
        crate::Output::Csv => print!("{}", csv(&review)),
        crate::Output::Text => print!("{}", render(&review)),
    }
    let tripped = review.findings.tripped(&keys);
    if tripped.is_empty() {
        return Ok(0);
    }
    eprintln!("access review fails on: {}", tripped.join(", "));
    Ok(1)
}

fn render(r: &AccessReview) -> String {
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
