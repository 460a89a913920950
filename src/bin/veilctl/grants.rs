//! `veilctl grants issue|list|revoke`.

use anyhow::bail;
use infraveil::grants::{GrantView, Issued};
use serde_json::json;

use crate::api::Api;
use crate::table::Table;

pub struct IssueArgs {
    pub identity: String,
    pub role: String,
    pub ttl: Option<String>,
    pub reason: Option<String>,
    pub by: String,
}

pub fn issue(api: &Api, a: IssueArgs, json_out: bool) -> anyhow::Result<()> {
    if let Some(ttl) = &a.ttl {
        check_duration("--ttl", ttl)?;
    }
    let body = json!({
        "identity": a.identity,
        "role": a.role,
        "ttl": a.ttl,
        "reason": a.reason,
        "issued_by": a.by,
    });
    let issued: Issued = api.post("/v1/grants", &body)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&issued)?);
        return Ok(());
    }
    let g = &issued.grant;
    let until = g.expires_at.as_deref().unwrap_or("revoked (standing role)");
    println!(
        "Issued grant {}: {} as {} until {until}.",
        g.id, g.identity, g.role
    );
    println!("The password is shown only now; nothing else can recover it.");
    println!("  password:      {}", issued.password);
    println!("  DATABASE_URL={}", issued.database_url);
    Ok(())
}

/// Say what is wrong with a duration here, in the flag's terms, rather
/// than sending it and relaying the daemon's parse error.
fn check_duration(flag: &str, value: &str) -> anyhow::Result<()> {
    if infraveil::config::parse_duration(value).is_ok() {
        return Ok(());
    }
    let number = value.trim();
    if !number.is_empty() && number.parse::<f64>().is_ok() {
        bail!("{flag} {value}: give a unit, like 90s, 15m or 1h");
    }
    bail!("{flag} {value:?}: not a duration; write a number and a unit, like 90s, 15m or 1h")
}

pub fn list(api: &Api, all: bool, json_out: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/grants?all=true"
    } else {
        "/v1/grants"
    };
    let grants: Vec<GrantView> = api.get(path)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&grants)?);
        return Ok(());
    }
    if grants.is_empty() {
        println!(
            "{}",
            if all {
                "No grants."
            } else {
                "No active grants (--all shows expired and revoked ones)."
            }
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "IDENTITY",
        "ROLE",
        "STATUS",
        "EXPIRES",
        "ISSUED BY",
        "REASON",
    ]);
    for g in &grants {
        let status = match (&g.revoked_by, serde_json::to_value(g.status)) {
            (Some(by), _) => format!("revoked by {by}"),
            (None, Ok(serde_json::Value::String(s))) => s,
            _ => "?".into(),
        };
        t.row(vec![
            g.id.clone(),
            g.identity.clone(),
            g.role.clone(),
            status,
            g.expires_at.clone().unwrap_or_else(|| "never".into()),
            g.issued_by.clone(),
            g.reason.clone().unwrap_or_default(),
        ]);
    }
    print!("{t}");
    Ok(())
}

pub fn revoke(
    api: &Api,
    id: &str,
    by: &str,
    reason: Option<String>,
    json_out: bool,
) -> anyhow::Result<()> {
    let body = json!({ "by": by, "reason": reason });
    let out: serde_json::Value = api.post(&format!("/v1/grants/{id}/revoke"), &body)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let field = |k: &str| {
        out.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let ended = out
        .get("sessions_ended")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    println!(
        "Revoked grant {} ({} as {}); {ended} live session{} ended.",
        field("id"),
        field("identity"),
        field("role"),
        if ended == 1 { "" } else { "s" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_duration;

    #[test]
    fn durations_are_checked_before_sending() {
        assert!(check_duration("--ttl", "90s").is_ok());
        assert!(check_duration("--ttl", "1h30m").is_ok());
        assert_eq!(
            check_duration("--ttl", "10").unwrap_err().to_string(),
            "--ttl 10: give a unit, like 90s, 15m or 1h"
        );
        assert_eq!(
            check_duration("--ttl", "soon").unwrap_err().to_string(),
            "--ttl \"soon\": not a duration; write a number and a unit, like 90s, 15m or 1h"
        );
    }
}
