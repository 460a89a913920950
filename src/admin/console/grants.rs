//! Grants, for the admin sign-in only: the active grants, issuing one (the
//! secret is shown once, on the answer to the POST, never again) and
//! revoking one (live sessions on it end, as with `veilctl grants
//! revoke`). Issuing and revoking go through the same calls as the API.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::{CsrfField, Posted, Signed};
use super::signin::CsrfForm;
use super::{Nav, page as layout};
use crate::admin::AdminState;
use crate::admin::grants::revoke_and_end;
use crate::grants::{IssueRequest, Issued};

/// `GET /console/grants`.
pub async fn page(State(state): State<AdminState>, signed: Signed) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    render(&state, &signed, html! {})
}

fn render(state: &AdminState, signed: &Signed, top: Markup) -> Response {
    let grants = state.grants.list(false);
    let policies = state.shared.policies();
    let body = html! {
        (top)
        section aria-labelledby="issue-h" {
            h2 #issue-h { "Issue a grant" }
            form.card method="post" action="/console/grants" {
                input type="hidden" name="csrf" value=(signed.csrf);
                div.row {
                    p {
                        label for="g-identity" { "Identity" }
                        select #g-identity name="identity" required {
                            @for name in policies.identities.keys() { option value=(name) { (name) } }
                        }
                    }
                    p {
                        label for="g-role" { "Role" }
                        select #g-role name="role" required {
                            @for name in policies.roles.keys() { option value=(name) { (name) } }
                        }
                    }
                    p { label for="g-ttl" { "Lasts (e.g. 15m, 1h)" } input #g-ttl name="ttl" required value="1h"; }
                    p { label for="g-reason" { "Reason (ticket)" } input #g-reason name="reason" maxlength="500"; }
                }
                p { button.primary type="submit" { "Issue" } }
            }
        }
        section aria-labelledby="active-h" {
            h2 #active-h { "Active grants" }
            @if grants.is_empty() {
                p.empty { "No active grants." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th scope="col" { "Grant" } th scope="col" { "Identity" } th scope="col" { "Role" } th scope="col" { "Expires" } th scope="col" { "Issued by" } th scope="col" { "Reason" } th scope="col" { span.visually-hidden { "Revoke" } } } }
                        tbody {
                            @for g in &grants {
                                tr {
                                    td { code { (g.id) } }
                                    td { (g.identity) }
                                    td { (g.role) }
                                    td { (g.expires_at.as_deref().unwrap_or("-")) }
                                    td { (g.issued_by) }
                                    td { (g.reason.as_deref().unwrap_or("-")) }
                                    td {
                                        form method="post" action={ "/console/grants/" (g.id) "/revoke" } {
                                            input type="hidden" name="csrf" value=(signed.csrf);
                                            button.deny type="submit" aria-label={ "Revoke " (g.id) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(StatusCode::OK, "Grants", Some(signed), Nav::Grants, body)
}

impl CsrfField for IssueForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Deserialize)]
pub struct IssueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/grants`: issue; the answer shows the secret once.
pub async fn issue(
    State(state): State<AdminState>,
    Posted(signed, f): Posted<IssueForm>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let ttl = match crate::config::parse_duration(f.ttl.trim()) {
        Ok(d) => d,
        Err(e) => return render(&state, &signed, html! { p.error role="alert" { (e) } }),
    };
    let req = IssueRequest {
        identity: f.identity.trim().to_owned(),
        role: f.role.trim().to_owned(),
        ttl: Some(ttl),
        reason: Some(f.reason.trim().to_owned()).filter(|r| !r.is_empty()),
        issued_by: Some("admin (console)".to_owned()),
    };
    let policies = state.shared.policies();
    match state.grants.issue(&policies, req).await {
        Ok(issued) => render(&state, &signed, shown_once(&issued)),
        Err(e) => render(&state, &signed, html! { p.error role="alert" { (e) } }),
    }
}

fn shown_once(i: &Issued) -> Markup {
    html! {
        section.secret role="status" aria-labelledby="issued-h" {
            h2 #issued-h { "Grant " (i.grant.id) " issued" }
            p { (i.grant.identity) " as " (i.grant.role) " until " (i.grant.expires_at.as_deref().unwrap_or("-")) ". The secret is shown this once; copy it now." }
            p { "Secret: " code #grant-secret { (i.password) } " " button type="button" data-copy="grant-secret" hidden { "Copy" } }
            p { "DATABASE_URL: " code #grant-url { (i.database_url) } " " button type="button" data-copy="grant-url" hidden { "Copy" } }
        }
    }
}

/// `POST /console/grants/{id}/revoke`.
pub async fn revoke(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Posted(signed, CsrfForm { .. }): Posted<CsrfForm>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let top = match revoke_and_end(&state, &id, "admin (console)".to_owned(), None).await {
        Ok(r) => html! {
            p.flash role="status" { "Grant " (r.grant.id) " revoked; " (r.sessions_ended) " live session(s) told to end." }
        },
        Err(e) => html! { p.error role="alert" { (e) } },
    };
    render(&state, &signed, top)
}
