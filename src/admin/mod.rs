//! The admin HTTP API, on its own listener: `/healthz` for load balancers,
//! the approval page (authorized by its signed link and the approver's own
//! credential), and everything else behind a bearer token compared in
//! constant time. JSON in and out; errors are `{"error": "..."}` with a
//! status that says whose fault it was. Nothing changes state on GET.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

use crate::approvals::Approvals;
use crate::grants::Grants;
use crate::proxy::Shared;
use crate::store::Store;

mod approvals;
pub mod audit;
mod grants;

#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub grants: Arc<Grants>,
    pub approvals: Option<Arc<Approvals>>,
    pub store: Arc<Store>,
    token: Arc<String>,
}

impl AdminState {
    pub fn new(shared: Arc<Shared>, grants: Arc<Grants>, store: Arc<Store>, token: String) -> Self {
        AdminState {
            approvals: shared.approvals.clone(),
            shared,
            grants,
            store,
            token: Arc::new(token),
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/grants", get(grants::list).post(grants::issue))
        .route("/v1/grants/{id}", get(grants::show))
        .route("/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/v1/approvers",
            get(approvals::approvers_list).post(approvals::enroll),
        )
        .route(
            "/v1/approvers/{id}/revoke",
            post(approvals::approver_revoke),
        )
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/export", get(audit::export))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        // Approvers come from a chat link: the signed link token and their
        // own credential authorize them, not the admin token.
        .route(
            "/approvals/{id}",
            get(approvals::page).post(approvals::decide_page),
        )
        .merge(protected)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut out = state.shared.metrics.render();
    crate::metrics::gauge(
        &mut out,
        "infraveil_grants_active",
        "Grants usable now.",
        state.grants.active_count() as u64,
    );
    let audit = &state.shared.audit;
    crate::metrics::gauge(
        &mut out,
        "infraveil_audit_healthy",
        "1 while the audit log can be written; 0 means statements are refused.",
        u64::from(audit.healthy()),
    );
    let _ = std::fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "# HELP infraveil_audit_records_total Audit records appended since start.\n\
             # TYPE infraveil_audit_records_total counter\ninfraveil_audit_records_total {}\n",
            audit.appended()
        ),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = presented.as_bytes().ct_eq(state.token.as_bytes()).into();
    if ok && !presented.is_empty() {
        next.run(req).await
    } else {
        let mut resp =
            ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong admin token").into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        resp
    }
}

/// `?all=true` on list endpoints: include what is no longer active
/// (expired and revoked grants; decided, expired and cancelled requests).
#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub all: bool,
}

/// An error answer: a status and a message for the person at the CLI.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}
