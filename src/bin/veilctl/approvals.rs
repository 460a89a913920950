//! `veilctl approvals list|approve|deny`.

use infraveil::approvals::ApprovalView;
use serde_json::json;

use crate::api::Api;
use crate::table::Table;

pub fn list(api: &Api, all: bool, json_out: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/approvals?all=true"
    } else {
        "/v1/approvals"
    };
    let reqs: Vec<ApprovalView> = api.get(path)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&reqs)?);
        return Ok(());
    }
    if reqs.is_empty() {
        println!(
            "{}",
            if all {
                "No approval requests."
            } else {
                "No pending approval requests (--all shows decided ones)."
            }
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "IDENTITY",
        "ROLE",
        "CLASS",
        "STATUS",
        "EXPIRES",
        "STATEMENT",
    ]);
    for r in &reqs {
        let status = match &r.decided_by {
            Some(by) => format!("{} by {by}", r.status.as_str()),
            None => r.status.as_str().to_owned(),
        };
        t.row(vec![
            r.id.clone(),
            r.identity.clone(),
            r.role.clone(),
            r.class.as_str().to_owned(),
            status,
            r.expires_at.clone(),
            one_line(&r.statement, 60),
        ]);
    }
    print!("{t}");
    Ok(())
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

pub fn decide(
    api: &Api,
    id: &str,
    approver: &str,
    note: Option<String>,
    approve: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let verb = if approve { "approve" } else { "deny" };
    let body = json!({ "as": approver, "note": note });
    let r: ApprovalView = api.post(&format!("/v1/approvals/{id}/{verb}"), &body)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "Approval request {} {} by {approver}: {} ({} as {}).",
        r.id,
        r.status.as_str(),
        one_line(&r.statement, 60),
        r.identity,
        r.role
    );
    Ok(())
}
