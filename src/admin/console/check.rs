//! The risk checker: paste SQL, pick an identity (and a role), and see
//! what `veilctl check` says, from the same library call: the class of
//! each statement with its tables and reason, and the decision. Offline:
//! the loaded policies only, nothing reaches a database. It changes
//! nothing, but the SQL is sent by POST (with the CSRF token) so it stays
//! out of URLs and logs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::{CsrfField, Posted, Signed};
use super::{Nav, message, page as layout};
use crate::admin::AdminState;
use crate::policy::check::{Checked, check};

/// Longest SQL the page judges.
const MAX_SQL: usize = 100_000;

impl CsrfField for CheckForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CheckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sql: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    role: String,
}

/// `GET /console/check`: the empty form.
pub async fn page(State(state): State<AdminState>, signed: Signed) -> Response {
    render(&state, &signed, &CheckForm::default(), None)
}

/// `POST /console/check`: judge the pasted SQL.
pub async fn post(
    State(state): State<AdminState>,
    Posted(signed, f): Posted<CheckForm>,
) -> Response {
    if f.sql.len() > MAX_SQL {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too long",
            "The risk checker takes up to 100,000 bytes of SQL.",
        );
    }
    let identity = Some(f.identity.trim()).filter(|s| !s.is_empty());
    let role = Some(f.role.trim()).filter(|s| !s.is_empty());
    let policies = state.shared.policies();
    let sql = f.sql.clone();
    let (identity_owned, role_owned) = (identity.map(str::to_owned), role.map(str::to_owned));
    // Classification of a large paste is CPU work: off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        check(
            policies,
            &sql,
            identity_owned.as_deref(),
            role_owned.as_deref(),
        )
        .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    render(&state, &signed, &f, Some(result))
}

fn render(
    state: &AdminState,
    signed: &Signed,
    f: &CheckForm,
    result: Option<Result<Checked, String>>,
) -> Response {
    let policies = state.shared.policies();
    let roles: Vec<&String> = policies.roles.keys().collect();
    let body = html! {
        form.card method="post" action="/console/check" {
            input type="hidden" name="csrf" value=(signed.csrf);
            p {
                label for="sql" { "SQL" }
                textarea.sql #sql name="sql" rows="6" required spellcheck="false" { (f.sql) }
            }
            div.row {
                p {
                    label for="identity" { "Identity" }
                    select #identity name="identity" {
                        option value="" { "(none: classify only)" }
                        @for (name, ident) in &policies.identities {
                            option value=(name) selected[*name == f.identity.trim()] { (name) " (" (format!("{:?}", ident.kind).to_lowercase()) ")" }
                        }
                    }
                }
                p {
                    label for="role" { "Role" }
                    select #role name="role" {
                        option value="" { "(each role it may hold)" }
                        @for r in &roles {
                            option value=(r) selected[r.as_str() == f.role.trim()] { (r) }
                        }
                    }
                }
            }
            p { button.primary type="submit" { "Check" } }
        }
        @match result {
            None => {},
            Some(Err(e)) => p.error role="alert" { (e) },
            Some(Ok(c)) => (report(&c)),
        }
    };
    layout(
        StatusCode::OK,
        "Risk checker",
        Some(signed),
        Nav::Check,
        body,
    )
}

fn report(c: &Checked) -> Markup {
    let class = c.analysis.class();
    html! {
        section #result aria-labelledby="result-h" {
            h2 #result-h { "Result" }
            p { "Class: " span.class-badge.(class.as_str()) #overall-class { (class.as_str()) } }
            @if let Some(d) = &c.decided {
                p {
                    "Decision: " span.decision.(d.verdict.action.as_str()) #decision { (d.verdict.action.as_str()) }
                    " (" (d.identity) " as " (d.role) "; rule " code { (d.verdict.rule) } ")"
                }
                p { (d.verdict.reason) }
                @if let Some(a) = &d.verdict.advice { p.note { (a) } }
                @if !d.verdict.approvers.is_empty() { p { "Approvers: " (d.verdict.approvers.join(", ")) } }
            }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "#" } th scope="col" { "Class" } th scope="col" { "Tables" } th scope="col" { "Reason" } } }
                    tbody {
                        @for (i, s) in c.analysis.statements.iter().enumerate() {
                            tr {
                                td { (i + 1) }
                                td { span.class-badge.(s.class.as_str()) { (s.class.as_str()) } }
                                td {
                                    @if s.tables.is_empty() { "-" }
                                    @else { (s.tables.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")) }
                                }
                                td { (s.reason) }
                            }
                        }
                    }
                }
            }
            @if let Some(d) = &c.decided {
                @if d.roles.len() > 1 {
                    h3 { "Per role" }
                    ul {
                        @for (r, v) in &d.roles {
                            li { (r) ": " span.decision.(v.action.as_str()) { (v.action.as_str()) } " (" code { (v.rule) } ")" }
                        }
                    }
                }
            }
        }
    }
}
