//! Approvals over HTTP: the JSON API behind `veilctl approvals` (admin
//! token), and the page approvers reach from a chat link.
//!
//! The page never changes anything on GET (chat unfurlers and link scanners
//! fetch links). It shows the request only to holders of the signed link,
//! and a decision is a POST that carries the link token, a CSRF token that
//! must match a `SameSite=Strict` cookie set by the page, the same origin,
//! and the approver's own credential (a secret of one of their active
//! grants). The request's state machine makes every link single-use.

use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{AdminState, ApiError, ListQuery};
use crate::approvals::approvers::{ApproverError, ApproverView, Enrolled};
use crate::approvals::{ApprovalError, ApprovalView, Approvals, Status};
use crate::auth::CredentialState;

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> ApiError {
        let status = match &e {
            ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
            ApprovalError::Decided { .. } | ApprovalError::BeingDecided(_) => StatusCode::CONFLICT,
            ApprovalError::Expired(_) => StatusCode::GONE,
            ApprovalError::NotAnApprover { .. }
            | ApprovalError::SelfApproval(_)
            | ApprovalError::BadLink => StatusCode::FORBIDDEN,
            ApprovalError::Store(_) | ApprovalError::Audit(_) => {
                tracing::error!(error = %e, "state store failure");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.to_string())
    }
}

fn approvals(state: &AdminState) -> Result<&Arc<Approvals>, ApiError> {
    state
        .approvals
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "approvals are not enabled"))
}

pub async fn list(
    State(state): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    let Query(q) = q?;
    let approvals = approvals(&state)?;
    // Requests other instances made or decided a moment ago, too.
    approvals.sync().await.map_err(ApprovalError::from)?;
    Ok(Json(approvals.list(q.all)))
}

pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    let approvals = approvals(&state)?;
    approvals.load(&id).await.map_err(ApprovalError::from)?;
    approvals
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApprovalError::NotFound(id).into())
}

#[derive(Debug, Deserialize)]
pub struct DecideRequest {
    /// The approver deciding (must be one of the request's approvers).
    #[serde(rename = "as")]
    approver: String,
    #[serde(default)]
    note: Option<String>,
}

pub async fn approve(
    state: State<AdminState>,
    id: Path<String>,
    body: Result<Json<DecideRequest>, JsonRejection>,
) -> Result<Json<ApprovalView>, ApiError> {
    decide_api(state, id, body, true).await
}

pub async fn deny(
    state: State<AdminState>,
    id: Path<String>,
    body: Result<Json<DecideRequest>, JsonRejection>,
) -> Result<Json<ApprovalView>, ApiError> {
    decide_api(state, id, body, false).await
}

async fn decide_api(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<DecideRequest>, JsonRejection>,
    approve: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    let Json(req) = body?;
    let policies = state.shared.policies();
    let view = approvals(&state)?
        .decide(
            &id,
            req.approver.trim(),
            approve,
            "veilctl",
            req.note,
            &policies,
        )
        .await?;
    Ok(Json(view))
}

// ---- Approver secrets (admin token) -------------------------------------

#[derive(Debug, Deserialize)]
pub struct EnrollRequest {
    identity: String,
    #[serde(default)]
    by: Option<String>,
}

impl From<ApproverError> for ApiError {
    fn from(e: ApproverError) -> ApiError {
        let status = match &e {
            ApproverError::NotAnApprover(_) => StatusCode::BAD_REQUEST,
            ApproverError::NotFound(_) => StatusCode::NOT_FOUND,
            ApproverError::Revoked(_) => StatusCode::CONFLICT,
            ApproverError::Derive | ApproverError::Store(_) | ApproverError::Audit(_) => {
                tracing::error!(error = %e, "approver secret store failure");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.to_string())
    }
}

pub async fn enroll(
    State(state): State<AdminState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Json<Enrolled>, ApiError> {
    let Json(req) = body?;
    let by = req
        .by
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or("admin");
    let policies = state.shared.policies();
    let enrolled = approvals(&state)?
        .approvers
        .enroll(req.identity.trim(), by, &policies)
        .await?;
    Ok(Json(enrolled))
}

pub async fn approvers_list(
    State(state): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ApproverView>>, ApiError> {
    let Query(q) = q?;
    Ok(Json(approvals(&state)?.approvers.list(q.all)))
}

pub async fn approver_revoke(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<ApproverView>, ApiError> {
    Ok(Json(
        approvals(&state)?.approvers.revoke(&id, "admin").await?,
    ))
}

// ---- The page ------------------------------------------------------------

const CSRF_COOKIE: &str = "veil_csrf";
/// Longest note kept from the page (the form says so too).
const MAX_NOTE: usize = 500;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    t: String,
    #[serde(default)]
    action: Option<String>,
}

/// `GET /approvals/{id}?t=TOKEN`: show the request. Changes nothing.
pub async fn page(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Bad link",
            "The link is malformed.",
        );
    };
    let Ok(approvals) = approvals(&state) else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "Approvals are not enabled.",
        );
    };
    // A request another instance made a moment ago.
    let _ = approvals.load(&id).await;
    let view = match approvals.by_link(&id, &q.t) {
        Ok(v) => v,
        Err(_) => return bad_link(),
    };
    let csrf = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        rand::random::<[u8; 16]>(),
    );
    let body = render_request(&view, &q.t, &csrf, q.action.as_deref());
    let mut resp = page_response(StatusCode::OK, body);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={csrf}; Path=/approvals; HttpOnly; SameSite=Strict"
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    t: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    approver: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /approvals/{id}`: an approver decides.
pub async fn decide_page(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<DecideForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form is malformed.",
        );
    };
    let Ok(approvals) = approvals(&state) else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "Approvals are not enabled.",
        );
    };
    let _ = approvals.load(&id).await;
    if approvals.by_link(&id, &form.t).is_err() {
        return bad_link();
    }
    if !same_origin(&headers, approvals.public_origin().as_deref())
        || !csrf_ok(&headers, &form.csrf)
    {
        return message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was not submitted from the approval page (CSRF check failed). Open the link again.",
        );
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return message_page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "Choose approve or deny.",
            );
        }
    };
    let approver = form.approver.trim().to_owned();
    // The form's maxlength is the browser's; the server holds to it too.
    let note = form
        .note
        .map(|n| n.chars().take(MAX_NOTE).collect::<String>());
    let policies = state.shared.policies();
    if let Err(e) = approvals.may_decide(&id, &approver, &policies) {
        return decision_error(e);
    }
    if let Some(wait) = state.signin_limit.blocked(&approver) {
        return message_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Refused",
            &format!(
                "Too many wrong secrets for this approver; try again in {} s.",
                wait.as_secs().max(1)
            ),
        );
    }
    if !signs_in(&state, approvals, &approver, form.secret).await {
        state.signin_limit.failed(&approver);
        tracing::info!(approval = %id, %approver, "approval page: wrong credential");
        return message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "That secret is not an approver secret or an active grant secret of this approver. Ask an admin for one: veilctl approvers enroll --identity NAME",
        );
    }
    match approvals
        .decide(&id, &approver, approve, "link", note, &policies)
        .await
    {
        Ok(v) => message_page(
            StatusCode::OK,
            if approve { "Approved" } else { "Denied" },
            &format!(
                "Request {} was {} by {}. {} This link is now spent.",
                v.id,
                v.status.as_str(),
                v.decided_by.as_deref().unwrap_or_default(),
                if !approve {
                    format!("{} gets an error saying so.", v.identity)
                } else if v.mode == crate::policy::ApprovalMode::Defer {
                    format!(
                        "Nothing has run yet: the statement runs once when {} sends it again.",
                        v.identity
                    )
                } else {
                    "The waiting session runs the statement now.".to_owned()
                }
            ),
        ),
        Err(e) => decision_error(e),
    }
}

/// Checked for an approver with no credential, so that costs what a real
/// check costs; derived once (PBKDF2 rounds), on first use.
static DECOY: std::sync::LazyLock<crate::auth::Verifier> = std::sync::LazyLock::new(|| {
    crate::auth::Verifier::from_password_with_salt(
        "infraveil-decoy",
        b"decoy-salt-16byt",
        crate::auth::SCRAM_ITERATIONS,
    )
});

/// Whether `secret` is one of `approver`'s approver secrets or the secret
/// of one of their active grants.
pub(super) async fn signs_in(
    state: &AdminState,
    approvals: &Approvals,
    approver: &str,
    secret: String,
) -> bool {
    if secret.is_empty() {
        return false;
    }
    // Secrets issued or enrolled on another instance a moment ago count.
    let _ = state.shared.credentials.refresh().await;
    let _ = approvals.approvers.sync().await;
    let mut verifiers: Vec<_> = state
        .shared
        .credentials
        .candidates(approver)
        .into_iter()
        .filter(|c| c.state == CredentialState::Active)
        .map(|c| c.credential.verifier)
        .collect();
    verifiers.extend(approvals.approvers.verifiers(approver));
    // An approver with no credential costs the same check as one with one,
    // so the time taken does not say which names hold credentials.
    let decoy = verifiers.is_empty();
    if decoy {
        verifiers.push(DECOY.clone());
    }
    tokio::task::spawn_blocking(move || {
        // Every candidate is checked, so timing does not say which matched.
        verifiers
            .iter()
            .map(|v| v.check_password(&secret))
            .fold(false, |a, b| a | b)
            && !decoy
    })
    .await
    .unwrap_or(false)
}

/// Wrong secrets per approver name: after [`SignInLimit::MAX`] within
/// [`SignInLimit::WINDOW`], that name is refused until the oldest failure
/// ages out, so a leaked link cannot be used to guess a secret.
#[derive(Default)]
pub struct SignInLimit {
    failures: std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
}

impl SignInLimit {
    const MAX: usize = 5;
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<std::time::Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `approver` must wait, if they must.
    pub fn blocked(&self, approver: &str) -> Option<std::time::Duration> {
        let mut all = self.lock();
        let list = all.get_mut(approver)?;
        list.retain(|t| t.elapsed() < Self::WINDOW);
        if list.len() < Self::MAX {
            return None;
        }
        list.first()
            .map(|t| Self::WINDOW.saturating_sub(t.elapsed()))
    }

    pub fn failed(&self, approver: &str) {
        let mut all = self.lock();
        // Bounded: names are whatever a client typed.
        if all.len() > 10_000 {
            all.retain(|_, l| l.iter().any(|t| t.elapsed() < Self::WINDOW));
        }
        all.entry(approver.to_owned())
            .or_default()
            .push(std::time::Instant::now());
    }
}

/// A POST from the approval page itself. Browsers say where a request
/// comes from: `Sec-Fetch-Site` (must be `same-origin`) and `Origin` on
/// every POST (must be this host, or the configured public URL when a
/// proxy in front rewrites `Host`; `null`, sent from sandboxed or opaque
/// contexts, is refused). A client that sends neither is not a browser a
/// cross-site page could drive; the CSRF cookie and the approver's secret
/// still bind it.
pub(super) fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return false;
    }
    let Some(origin) = text(header::ORIGIN) else {
        return true;
    };
    if public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = text(header::HOST) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// Double-submit: the form's token must equal the page's cookie.
fn csrf_ok(headers: &HeaderMap, form_token: &str) -> bool {
    if form_token.is_empty() {
        return false;
    }
    super::cookies(headers, CSRF_COOKIE)
        .any(|v| bool::from(v.as_bytes().ct_eq(form_token.as_bytes())))
}

fn decision_error(e: ApprovalError) -> Response {
    message_page(decision_status(&e), "Refused", &e.to_string())
}

/// The status of a refused decision, on a page.
pub(super) fn decision_status(e: &ApprovalError) -> StatusCode {
    match e {
        ApprovalError::Decided { .. } | ApprovalError::BeingDecided(_) => StatusCode::CONFLICT,
        ApprovalError::Expired(_) => StatusCode::GONE,
        ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
        ApprovalError::Store(_) | ApprovalError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    }
}

fn bad_link() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Invalid link",
        "This approval link is invalid. Use the link from the approval message.",
    )
}

// ---- HTML ----------------------------------------------------------------

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}\
pre{background:#f4f4f4;padding:.8rem;white-space:pre-wrap;word-break:break-word}\
th{text-align:left;padding-right:1rem;vertical-align:top}\
button{font-size:1rem;padding:.4rem 1.2rem;margin-right:.6rem}\
.approve{background:#1a7f37;color:#fff}.deny{background:#cf222e;color:#fff}\
.chosen{outline:3px solid #0969da}.warn{background:#fff8c5;padding:.6rem;border:1px solid #d4a72c}";

/// The headers of every HTML page a person opens (the approval page and the
/// console), with the page's content security policy.
pub(super) fn page_headers(h: &mut HeaderMap, csp: &'static str) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The token is in the URL: never send it to another origin. Not
    // `no-referrer`: with it, browsers send `Origin: null` on the form's own
    // POST, and the origin check could not tell it from a forged one.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
}

fn page_response(status: StatusCode, body: String) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>infraveil approval</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body>{body}</body></html>"
    );
    let mut resp = (status, Html(html)).into_response();
    page_headers(
        resp.headers_mut(),
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    );
    resp
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    page_response(
        status,
        format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)),
    )
}

fn render_request(v: &ApprovalView, token: &str, csrf: &str, action: Option<&str>) -> String {
    use crate::approvals::notify::{params_line, relative, story, what_approving_does};
    let row = |k: &str, val: &str| format!("<tr><th>{k}</th><td>{}</td></tr>", escape(val));
    let who = crate::approvals::notify::who(v);
    let (statement, hidden) = crate::approvals::notify::reveal(&v.statement);
    let mut out = format!(
        "<h1>Approval request {}</h1><p><b>{}</b> wants to run a <b>{}</b> statement.</p>",
        escape(&v.id),
        escape(&who),
        escape(v.class.as_str()),
    );
    if hidden {
        out.push_str(&format!(
            "<p class=\"warn\" role=\"alert\"><b>Warning:</b> {}.</p>",
            escape(crate::approvals::notify::HIDDEN_CHARACTERS)
        ));
    }
    // `dir=ltr` and isolation: nothing in the text can reorder the page.
    out.push_str(&format!(
        "<pre dir=\"ltr\" style=\"unicode-bidi:isolate\">{}</pre><table>",
        escape(&statement)
    ));
    if let Some(p) = params_line(v) {
        out.push_str(&row("Runs with parameters", &p));
    }
    out.push_str(&row("Status", &story(v)));
    if v.status == Status::Pending {
        out.push_str(&row("Approving", &what_approving_does(v)));
    }
    out.push_str(&row("Role", &v.role));
    out.push_str(&row(
        "Grant",
        &match &v.grant_reason {
            Some(r) => format!("{} (reason: {r})", v.grant),
            None => format!("{} (no reason given)", v.grant),
        },
    ));
    out.push_str(&row("From", &v.client_addr));
    out.push_str(&row("Database", &v.database));
    out.push_str(&row(
        "Tables",
        &if v.tables.is_empty() {
            "-".to_owned()
        } else {
            v.tables.join(", ")
        },
    ));
    out.push_str(&row("Why held", &format!("{} (rule {})", v.reason, v.rule)));
    out.push_str(&format!(
        "<tr><th>Blast radius</th><td>{}</td></tr>",
        v.preview
            .iter()
            .map(|l| escape(l))
            .collect::<Vec<_>>()
            .join("<br>")
    ));
    out.push_str(&row("Approvers", &v.approvers.join(", ")));
    out.push_str(&row("Requested", &v.created_at));
    let expiry = if v.status == Status::Pending {
        format!("{} ({})", relative(v.expires_ms), v.expires_at)
    } else {
        v.expires_at.clone()
    };
    out.push_str(&row("Expires", &expiry));
    if let (Some(by), Some(at)) = (&v.decided_by, &v.decided_at) {
        let when = v.decided_ms.map(relative).unwrap_or_default();
        out.push_str(&row("Decided", &format!("by {by}, {at} ({when})")));
    }
    if let Some(note) = &v.note {
        out.push_str(&row("Note", note));
    }
    if let Some(o) = &v.outcome {
        out.push_str(&row("Outcome", o));
    }
    out.push_str(&format!(
        "<tr><th>Statement SHA-256</th><td><code>{}</code></td></tr></table>",
        escape(&v.statement_hash)
    ));
    if v.status != Status::Pending {
        out.push_str(&format!(
            "<p class=\"spent\">This link is spent: the request is <b>{}</b> and nothing more can be decided.</p>",
            v.status.as_str()
        ));
        return out;
    }
    let chosen = |a: &str| if action == Some(a) { " chosen" } else { "" };
    out.push_str(&format!(
        "<h2>Decide</h2><form method=\"post\" action=\"/approvals/{id}\">\
         <input type=\"hidden\" name=\"t\" value=\"{t}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <p><label>Approver <input name=\"approver\" required autocomplete=\"username\"></label></p>\
         <p><label>Your secret (an approver secret from <code>veilctl approvers enroll</code>, or the secret of one of your grants) <input name=\"secret\" type=\"password\" required autocomplete=\"current-password\"></label></p>\
         <p><label>Note <input name=\"note\" maxlength=\"500\"></label></p>\
         <p><button class=\"approve{ca}\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"deny{cd}\" name=\"decision\" value=\"deny\">Deny</button></p></form>",
        id = escape(&v.id),
        t = escape(token),
        csrf = escape(csrf),
        ca = chosen("approve"),
        cd = chosen("deny"),
    ));
    out
}

#[cfg(test)]
mod tests;
