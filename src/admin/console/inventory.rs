//! Who *could*: the blast radius of an identity and the access review, as
//! `veilctl blast-radius` and `veilctl access review` print them (the same
//! reports, the same text renderer), and the guard-config generator of
//! `veilctl policy init` with a copy button. All GETs that only read.
//! Admin sign-in only: they map every identity's reach.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Signed;
use super::{Nav, page as layout};
use crate::admin::AdminState;
use crate::admin::inventory::{radius_report, review_report};
use crate::inventory::guard::{GuardRequest, generate};
use crate::inventory::text;
use crate::policy::Kind;

fn tabs(current: &str) -> Markup {
    html! {
        nav.tabs aria-label="Inventory" {
            ul.row {
                @for (href, label) in [("/console/blast-radius", "Blast radius"), ("/console/access", "Access review"), ("/console/guard", "Guard config")] {
                    li { a href=(href) aria-current=[(href == current).then_some("page")] { (label) } }
                }
            }
        }
    }
}

fn identity_select(state: &AdminState, chosen: &str) -> Markup {
    let policies = state.shared.policies();
    html! {
        select #identity name="identity" required {
            option value="" { "(choose)" }
            @for name in policies.identities.keys() {
                option value=(name) selected[name == chosen] { (name) }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RadiusForm {
    #[serde(default)]
    identity: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    database: String,
}

/// `GET /console/blast-radius[?identity=I&role=R&database=D]`.
pub async fn blast_radius(
    State(state): State<AdminState>,
    signed: Signed,
    q: Result<Query<RadiusForm>, QueryRejection>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let f = q.map(|Query(q)| q).unwrap_or_default();
    let identity = f.identity.trim();
    let result = if identity.is_empty() {
        None
    } else {
        let role = Some(f.role.trim()).filter(|r| !r.is_empty());
        let db = Some(f.database.trim().to_owned()).filter(|d| !d.is_empty());
        Some(radius_report(&state, identity, role, db).await)
    };
    let body = html! {
        (tabs("/console/blast-radius"))
        p { "What an identity could do right now and at most: the policy's classes and scopes, intersected with what PostgreSQL lets each role's upstream user do." }
        form.card method="get" action="/console/blast-radius" {
            div.row {
                p { label for="identity" { "Identity" } (identity_select(&state, identity)) }
                p { label for="role" { "Role (optional)" } input #role name="role" value=(f.role); }
                p { label for="database" { "Database (optional)" } input #database name="database" value=(f.database); }
            }
            p { button.primary type="submit" { "Show" } }
        }
        @match result {
            None => {},
            Some(Err(e)) => p.error role="alert" { (e.message) },
            Some(Ok(r)) => {
                h2 { "Summary" }
                ul { @for line in &r.summary { li { (line) } } }
                h2 { "Details" }
                pre #radius-text { (text::blast_radius(&r)) }
            },
        }
    };
    layout(
        StatusCode::OK,
        "Blast radius",
        Some(&signed),
        Nav::Inventory,
        body,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ReviewForm {
    days: Option<u64>,
}

/// `GET /console/access[?days=N]`.
pub async fn access_review(
    State(state): State<AdminState>,
    signed: Signed,
    q: Result<Query<ReviewForm>, QueryRejection>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let days = q.ok().and_then(|Query(q)| q.days).unwrap_or(90);
    let result = review_report(&state, days).await;
    let body = html! {
        (tabs("/console/access"))
        form.card method="get" action="/console/access" {
            p {
                label for="days" { "Audit window in days (roles unused this long are idle)" }
                input #days name="days" type="number" min="1" max="3650" value=(days);
            }
            p { button.primary type="submit" { "Review" } }
        }
        @match result {
            Err(e) => p.error role="alert" { (e.message) },
            Ok(r) => {
                @let f = &r.findings;
                ul {
                    li { (f.standing.len()) " identities with standing access" }
                    li { (f.unused_grants.len()) " unused grant(s)" }
                    li { (f.idle_roles.len()) " idle role(s)" }
                    li { (f.never_logged_in.len()) " never logged in" }
                }
                pre #review-text { (text::access_review(&r)) }
            },
        }
    };
    layout(
        StatusCode::OK,
        "Access review",
        Some(&signed),
        Nav::Inventory,
        body,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct GuardForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    tables: String,
    #[serde(default)]
    approvers: String,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `GET /console/guard[?kind=K&identity=NAME&tables=GLOBS&approvers=A]`:
/// `veilctl policy init`, checked against the loaded policies.
pub async fn guard(
    State(state): State<AdminState>,
    signed: Signed,
    q: Result<Query<GuardForm>, QueryRejection>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let f = q.map(|Query(q)| q).unwrap_or_default();
    let kinds = ["agent", "ci", "human", "service"];
    let result = if f.identity.trim().is_empty() {
        None
    } else {
        Some(build(&state, &f))
    };
    let body = html! {
        (tabs("/console/guard"))
        p { "A least-privilege guard config for a new identity, as " code { "veilctl policy init" } " prints it; checked by loading it with the policies in force." }
        form.card method="get" action="/console/guard" {
            div.row {
                p {
                    label for="kind" { "Kind" }
                    select #kind name="kind" {
                        @for k in kinds { option value=(k) selected[k == f.kind] { (k) } }
                    }
                }
                p { label for="identity" { "New identity" } input #identity name="identity" required value=(f.identity); }
                p { label for="tables" { "Tables (globs, comma-separated)" } input #tables name="tables" placeholder="public.*" value=(f.tables); }
                p { label for="approvers" { "Approvers (comma-separated)" } input #approvers name="approvers" value=(f.approvers); }
            }
            p { button.primary type="submit" { "Generate" } }
        }
        @match result {
            None => {},
            Some(Err(e)) => p.error role="alert" { (e) },
            Some(Ok(toml)) => {
                p { button type="button" data-copy="guard-toml" hidden { "Copy" } }
                pre #guard-toml { (toml) }
            },
        }
    };
    layout(
        StatusCode::OK,
        "Guard config",
        Some(&signed),
        Nav::Inventory,
        body,
    )
}

fn build(state: &AdminState, f: &GuardForm) -> Result<String, String> {
    let kind: Kind = serde_json::from_value(serde_json::Value::String(f.kind.clone()))
        .map_err(|_| format!("unknown kind {:?}", f.kind))?;
    let req = GuardRequest {
        kind,
        identity: f.identity.trim().to_owned(),
        tables: list(&f.tables),
        upstream_user: None,
        approvers: list(&f.approvers),
        observed: None,
    };
    let policies = state.shared.policies();
    generate(&req, Some(&policies))
        .map(|g| g.toml)
        .map_err(|e| e.to_string())
}
