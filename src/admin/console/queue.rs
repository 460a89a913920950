//! The approvals queue: pending requests the signed-in approver may decide
//! (all of them for the admin), live over server-sent events, with
//! approve / deny and a note; and the history with who decided. A decision
//! goes through [`Approvals::decide`], the path the approval page and
//! `veilctl` use, so its audit event has the same shape, recorded under the
//! signed-in approver.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::{CsrfField, Posted, Signed, Who};
use super::{Nav, highlight, message, page as layout};
use crate::admin::AdminState;
use crate::approvals::notify::{params_line, relative, story, what_approving_does, who};
use crate::approvals::{ApprovalError, ApprovalView, Approvals, Status};

/// Longest note kept (the form says so too).
const MAX_NOTE: usize = 500;
/// Decided requests shown in the history.
const HISTORY: usize = 50;

/// Whether `who` may see (and so try to decide) request `v`: the admin
/// sees all; an approver only requests for roles that name them.
pub fn visible(who: &Who, v: &ApprovalView) -> bool {
    match who {
        Who::Admin => true,
        Who::Approver(name) => v.approvers.iter().any(|a| a == name),
    }
}

fn pending(approvals: &Approvals, who: &Who) -> Vec<ApprovalView> {
    approvals
        .list(false)
        .into_iter()
        .filter(|v| visible(who, v))
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// A request just decided here: its story is shown on top.
    done: Option<String>,
}

/// `GET /console/approvals`.
pub async fn page(
    State(state): State<AdminState>,
    signed: Signed,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Some(approvals) = &state.approvals else {
        return not_enabled();
    };
    let done = q
        .ok()
        .and_then(|Query(q)| q.done)
        .and_then(|id| approvals.get(&id))
        .filter(|v| visible(&signed.who, v));
    let history: Vec<ApprovalView> = approvals
        .list(true)
        .into_iter()
        .filter(|v| v.status != Status::Pending && visible(&signed.who, v))
        .take(HISTORY)
        .collect();
    let body = html! {
        @if let Some(v) = done {
            p.flash role="status" { "Request " (v.id) ": " (story(&v)) "." }
        }
        section aria-labelledby="pending-h" {
            h2 #pending-h { "Pending" }
            p.note { "New requests appear here without reloading; without JavaScript, reload the page." }
            div #queue data-events="/console/approvals/events" aria-live="polite" {
                (queue(&pending(approvals, &signed.who), &signed))
            }
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "History" }
            (history_table(&history))
        }
    };
    layout(
        StatusCode::OK,
        "Approvals",
        Some(&signed),
        Nav::Approvals,
        body,
    )
}

/// The pending requests, as the page shows them and the live feed sends
/// them.
fn queue(list: &[ApprovalView], signed: &Signed) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "No pending requests." }
        }
        @for v in list { (request(v, signed)) }
    }
}

fn request(v: &ApprovalView, signed: &Signed) -> Markup {
    let (statement, hidden) = highlight::sql(&v.statement);
    let approver = signed.who.name();
    let own = v.identity == approver;
    html! {
        article.request id={ "req-" (v.id) } data-id=(v.id) aria-labelledby={ "h-" (v.id) } {
            h3 id={ "h-" (v.id) } {
                span.class-badge.(v.class.as_str()) { (v.class.as_str()) }
                " " (who(v)) " as " (v.role)
            }
            @if hidden {
                p.warn role="alert" { strong { "Warning: " } (crate::approvals::notify::HIDDEN_CHARACTERS) "." }
            }
            pre.sql dir="ltr" { code { (statement) } }
            h4 { "Blast radius" }
            ul.preview {
                @for line in &v.preview { li { (line) } }
                @if v.preview.is_empty() { li { "no preview" } }
            }
            dl.facts {
                dt { "Request" } dd { code { (v.id) } }
                dt { "Identity" } dd { (who(v)) }
                dt { "Role" } dd { (v.role) }
                dt { "Class" } dd { (v.class.as_str()) }
                @if let Some(p) = params_line(v) { dt { "Parameters" } dd { (p) } }
                dt { "Tables" } dd { @if v.tables.is_empty() { "-" } @else { (v.tables.join(", ")) } }
                dt { "Why held" } dd { (v.reason) " (rule " (v.rule) ")" }
                dt { "Approving" } dd { (what_approving_does(v)) }
                dt { "Age" } dd { (relative(v.created_ms)) " (" (v.created_at) ")" }
                dt { "Expires" } dd { (relative(v.expires_ms)) " (" (v.expires_at) ")" }
                dt { "Approvers" } dd { (v.approvers.join(", ")) }
            }
            @if own {
                p.note { "You asked for this statement: another approver must decide it." }
            } @else {
                form.decide method="post" action={ "/console/approvals/" (v.id) } {
                    input type="hidden" name="csrf" value=(signed.csrf);
                    @if signed.who.is_admin() {
                        p {
                            label for={ "as-" (v.id) } { "Decide as" }
                            select id={ "as-" (v.id) } name="as" required {
                                // Never the requester: it cannot approve itself.
                                @for a in v.approvers.iter().filter(|a| **a != v.identity) { option value=(a) { (a) } }
                            }
                        }
                    }
                    p {
                        label for={ "note-" (v.id) } { "Note (optional, up to 500 characters)" }
                        textarea id={ "note-" (v.id) } name="note" maxlength="500" rows="2" {}
                    }
                    p.buttons {
                        button.approve type="submit" name="decision" value="approve" { "Approve" }
                        button.deny type="submit" name="decision" value="deny" { "Deny" }
                    }
                }
            }
        }
    }
}

fn history_table(list: &[ApprovalView]) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "Nothing decided yet." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Request" } th scope="col" { "Who" } th scope="col" { "Statement" } th scope="col" { "Status" } th scope="col" { "Decided by" } th scope="col" { "Note" } th scope="col" { "Outcome" } } }
                    tbody {
                        @for v in list {
                            tr {
                                td { code { (v.id) } }
                                td { (who(v)) " as " (v.role) }
                                td { code.stmt { (crate::approvals::notify::reveal(&v.statement).0) } }
                                td { (v.status.as_str()) }
                                td {
                                    @if let Some(by) = &v.decided_by { (by) }
                                    @else { "-" }
                                    @if let Some(at) = &v.decided_at { br; small { (at) } }
                                }
                                td { (v.note.as_deref().unwrap_or("-")) }
                                td { (v.outcome.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/approvals/events`: the pending queue again whenever the
/// set of requests in it changes (a `queue` event carrying the same HTML
/// as the page). Ends when the session does.
pub async fn events(State(state): State<AdminState>, signed: Signed) -> Response {
    let Some(approvals) = state.approvals.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let stream = futures_util::stream::unfold(
        (None::<Vec<String>>, state, approvals, signed),
        |(last, state, approvals, signed)| async move {
            let mut first = last.is_none();
            loop {
                if !first {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                first = false;
                // Ends with the session, or when its approver leaves the
                // policies.
                if !state.console.sessions.alive(&signed.id)
                    || !super::session::still_allowed(&state, &signed.who)
                {
                    return None;
                }
                let list = pending(&approvals, &signed.who);
                let ids: Vec<String> = list.iter().map(|v| v.id.clone()).collect();
                if last.as_ref() != Some(&ids) {
                    let html = queue(&list, &signed).into_string();
                    let ev: Result<Event, Infallible> =
                        Ok(Event::default().event("queue").data(html));
                    return Some((ev, (Some(ids), state, approvals, signed)));
                }
            }
        },
    );
    let sse: Sse<_> = Sse::new(stream).keep_alive(KeepAlive::default());
    super::with_headers(sse.into_response())
}

impl CsrfField for DecideForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: Option<String>,
    /// The admin decides as one of the request's approvers (as `veilctl
    /// approvals approve --as` does).
    #[serde(default, rename = "as")]
    as_approver: Option<String>,
}

/// `POST /console/approvals/{id}`: approve or deny.
pub async fn decide(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Posted(signed, form): Posted<DecideForm>,
) -> Response {
    let Some(approvals) = &state.approvals else {
        return not_enabled();
    };
    // Enforced here, not only by what the page shows: a request the
    // approver may not see reads as one that does not exist.
    let _ = approvals.load(&id).await;
    let Some(view) = approvals.get(&id).filter(|v| visible(&signed.who, v)) else {
        tracing::info!(approval = %id, who = signed.who.name(), "console: decision refused, not this approver's request");
        return message(
            StatusCode::FORBIDDEN,
            "Refused",
            "You are not an approver of this request.",
        );
    };
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return message(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "Choose approve or deny.",
            );
        }
    };
    let (approver, via) = match &signed.who {
        Who::Approver(name) => (name.clone(), "console"),
        Who::Admin => match form.as_approver.as_deref().map(str::trim) {
            Some(a) if !a.is_empty() => (a.to_owned(), "console (admin)"),
            _ => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "Say which approver the admin decides as.",
                );
            }
        },
    };
    let note = form
        .note
        .map(|n| n.chars().take(MAX_NOTE).collect::<String>());
    let policies = state.shared.policies();
    match approvals
        .decide(&view.id, &approver, approve, via, note, &policies)
        .await
    {
        Ok(v) => Redirect::to(&format!("/console/approvals?done={}", v.id)).into_response(),
        Err(e) => refused(e),
    }
}

fn not_enabled() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Approvals",
        "Approvals are not enabled.",
    )
}

fn refused(e: ApprovalError) -> Response {
    message(
        crate::admin::approvals::decision_status(&e),
        "Refused",
        &e.to_string(),
    )
}
