//! Signing in and out. An approver signs in with their own credential (an
//! approver secret or the secret of one of their active grants, checked
//! as the approval page checks it), an operator with the admin token.
//! Wrong attempts count against the same per-name limit as the approval
//! page, and the answer never says which of identity and secret was wrong.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::session::{self, CsrfField, Posted, Signed, Who};
use crate::admin::AdminState;
use crate::admin::approvals::{same_origin, signs_in};

/// `GET /console/signin`.
pub async fn page(signed: Option<Signed>) -> Response {
    if signed.is_some() {
        return Redirect::to("/console/approvals").into_response();
    }
    signin_form(StatusCode::OK, None)
}

fn signin_form(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        form method="post" action="/console/signin" {
            p {
                label for="identity" { "Identity" }
                input #identity name="identity" autocomplete="username" autocapitalize="none" spellcheck="false";
                small { "Your approver name, e.g. oncall. Leave it empty to sign in with the admin token." }
            }
            p {
                label for="secret" { "Secret" }
                input #secret name="secret" type="password" required autocomplete="current-password";
                small { "An approver secret (" code { "veilctl approvers enroll" } "), the secret of one of your grants, or the admin token." }
            }
            p { button.primary type="submit" { "Sign in" } }
        }
        p.note { "Sessions end after 30 minutes idle, 8 hours at most, and when the firewall restarts." }
    };
    super::page(status, "Sign in", None, super::Nav::None, body)
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    identity: String,
    #[serde(default)]
    secret: String,
}

/// `POST /console/signin`.
pub async fn post(
    State(state): State<AdminState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return super::message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form is malformed.",
        );
    };
    if !same_origin(&headers, session::public_origin(&state).as_deref()) {
        return super::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This sign-in was not sent from the console's own page.",
        );
    }
    let identity = f.identity.trim().to_owned();
    if let Some(wait) = state.signin_limit.blocked(&identity) {
        return signin_form(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins for this identity; try again in {} s.",
                wait.as_secs().max(1)
            )),
        );
    }
    let who = if identity.is_empty() {
        let ok: bool = f.secret.as_bytes().ct_eq(state.token.as_bytes()).into();
        (ok && !f.secret.is_empty()).then_some(Who::Admin)
    } else {
        // Both checks always run: the time taken does not say which failed.
        let approver = state.shared.policies().is_approver(&identity);
        let signed = match &state.approvals {
            Some(a) => signs_in(&state, a, &identity, f.secret).await,
            None => false,
        };
        (approver && signed).then(|| Who::Approver(identity.clone()))
    };
    let Some(who) = who else {
        state.signin_limit.failed(&identity);
        tracing::info!(identity = %identity, "console: sign-in refused");
        return signin_form(
            StatusCode::FORBIDDEN,
            Some("Sign-in failed: wrong identity or secret, or this identity approves no role."),
        );
    };
    tracing::info!(who = who.name(), "console: signed in");
    let id = state.console.sessions.create(who);
    let mut resp = Redirect::to("/console/approvals").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::cookie(&id, session::secure(&state))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A form that carries only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl CsrfField for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/signout`.
pub async fn signout(
    State(state): State<AdminState>,
    Posted(signed, _): Posted<CsrfForm>,
) -> Response {
    state.console.sessions.remove(&signed.id);
    let mut resp = Redirect::to("/console/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::cleared_cookie(session::secure(&state))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
