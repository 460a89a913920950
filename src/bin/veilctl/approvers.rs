//! `veilctl approvers enroll|list|revoke`: approvers' own secrets for the
//! approval page (they never reach PostgreSQL).

use infraveil::approvals::approvers::{ApproverView, Enrolled};
use serde_json::json;

use crate::api::Api;
use crate::table::Table;

pub fn enroll(api: &Api, identity: &str, by: &str, json_out: bool) -> anyhow::Result<()> {
    let e: Enrolled = api.post("/v1/approvers", &json!({ "identity": identity, "by": by }))?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(());
    }
    println!(
        "Approver secret {} for {} (shown once; it signs in on approval pages and reaches no database):\n{}",
        e.approver.id, e.approver.identity, e.secret
    );
    Ok(())
}

pub fn list(api: &Api, all: bool, json_out: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/approvers?all=true"
    } else {
        "/v1/approvers"
    };
    let list: Vec<ApproverView> = api.get(path)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("No approver secrets (enroll one: veilctl approvers enroll --identity NAME).");
        return Ok(());
    }
    let mut t = Table::new(&["ID", "IDENTITY", "ENROLLED", "BY", "REVOKED"]);
    for a in &list {
        t.row(vec![
            a.id.clone(),
            a.identity.clone(),
            a.enrolled_at.clone(),
            a.enrolled_by.clone(),
            a.revoked_at.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    print!("{t}");
    Ok(())
}

pub fn revoke(api: &Api, id: &str, json_out: bool) -> anyhow::Result<()> {
    let a: ApproverView = api.post(&format!("/v1/approvers/{id}/revoke"), &json!({}))?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        println!("Approver secret {} of {} revoked.", a.id, a.identity);
    }
    Ok(())
}
