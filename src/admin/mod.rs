//! The admin HTTP API, on its own listener: `/healthz` for load balancers,
//! the approval page (authorized by its signed link and the approver's own
//! credential), `/v1/self` (an identity about itself, authorized by its own
//! grant credential; see `selfserve`), the web console under `/console`
//! (its own sign-in and sessions), and everything else behind a bearer
//! token compared in constant time. JSON in and out; errors are
//! `{"error": "..."}` with a
//! status that says whose fault it was. Nothing changes state on GET.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
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
mod console;
mod grants;
mod inventory;
mod selfserve;

#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub grants: Arc<Grants>,
    pub approvals: Option<Arc<Approvals>>,
    pub store: Arc<Store>,
    token: Arc<String>,
    /// Wrong secrets on the approval page and the console, per name.
    signin_limit: Arc<approvals::SignInLimit>,
    /// Wrong grant secrets on `/v1/self`, per identity.
    self_limit: Arc<approvals::SignInLimit>,
    /// The web console's sessions.
    console: Arc<console::Console>,
}

impl AdminState {
    pub fn new(shared: Arc<Shared>, grants: Arc<Grants>, store: Arc<Store>, token: String) -> Self {
        AdminState {
            approvals: shared.approvals.clone(),
            shared,
            grants,
            store,
            token: Arc::new(token),
            signin_limit: Arc::default(),
            self_limit: Arc::default(),
            console: Arc::default(),
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
        .route("/v1/inventory/blast-radius", get(inventory::blast_radius))
        .route("/v1/inventory/access-review", get(inventory::access_review))
        .route("/v1/inventory/usage", get(inventory::identity_usage))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        // Approvers come from a chat link: the signed link token and their
        // own credential authorize them, not the admin token.
        .route(
            "/approvals/{id}",
            get(approvals::page).post(approvals::decide_page),
        )
        // An identity about itself, with its own grant credential.
        .route("/v1/self/whoami", get(selfserve::whoami))
        .route("/v1/self/check", post(selfserve::check))
        .route("/v1/self/proposals", post(selfserve::propose))
        .route("/v1/self/approvals/{id}", get(selfserve::approval))
        // The console signs its users in itself (session cookie + CSRF).
        .merge(console::routes())
        .merge(protected)
        .with_state(state)
}

/// 200 while this instance can serve; 503 (with why) while it refuses
/// statements or logins, so a load balancer sends new sessions elsewhere.
async fn healthz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    let audit = &state.shared.audit;
    if !state.store.available() || audit.waiting() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable: the control database cannot be reached\n",
        )
    } else if !audit.healthy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable: the audit log cannot be written\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut out = state.shared.metrics.render();
    crate::metrics::gauge(
        &mut out,
        "infraveil_grants_active",
        "Grants usable now.",
        state.grants.active_count() as u64,
    );
    crate::metrics::gauge(
        &mut out,
        "infraveil_row_estimate_connections_idle",
        "Side connections kept open to plan the writes of roles with row limits.",
        state.shared.planner.idle() as u64,
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

/// The values of cookie `name` in a request's `Cookie` headers.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
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
        use axum::extract::rejection::JsonRejection as J;
        let message = match &r {
            J::JsonDataError(_) => {
                match find::<serde_path_to_error::Error<serde_json::Error>>(&r) {
                    Some(e) => field_error(e.path(), &without_position(e.inner())),
                    None => r.body_text(),
                }
            }
            J::JsonSyntaxError(_) => "the request body is not valid JSON".to_owned(),
            J::MissingJsonContentType(_) => {
                "the request body must be JSON (Content-Type: application/json)".to_owned()
            }
            _ => r.body_text(),
        };
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> ApiError {
        // serde_urlencoded's error is serde's plain value error.
        let message = match find::<serde_path_to_error::Error<serde::de::value::Error>>(&r) {
            Some(e) => field_error(e.path(), &e.inner().to_string()),
            None => r.body_text(),
        };
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The error of type `T` in `err`'s chain of causes. axum keeps the
/// deserializer's error, with the path to the bad field, as the source of
/// its rejections; their own text prefixes it with "Failed to deserialize
/// the JSON body into the target type" and ends it with serde_json's
/// position in a body the user never wrote (veilctl did).
fn find<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = err.source();
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cause = c.source();
    }
    None
}

/// `field ttl: invalid duration ...`, or the message alone when the error
/// is about the whole body (a missing field names itself).
fn field_error(path: &serde_path_to_error::Path, message: &str) -> String {
    use serde_path_to_error::Segment;
    if path.iter().all(|s| matches!(s, Segment::Unknown)) {
        return message.to_owned();
    }
    format!("field {path}: {message}")
}

/// serde_json's message without its " at line L column C" suffix (built
/// from the error's own line and column, so only that suffix goes).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::rejection::{JsonRejection, QueryRejection};
    use axum::extract::{FromRequest, Query};
    use axum::http::{Request, Uri};

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        identity: String,
        #[serde(default, deserialize_with = "ttl")]
        ttl: Option<u64>,
    }

    fn ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Err(serde::de::Error::custom(format!(
            "invalid duration {s:?}; use e.g. 90s"
        )))
    }

    async fn json_error(body: &str) -> String {
        let req = Request::post("/")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        let r: JsonRejection = Json::<Body>::from_request(req, &()).await.unwrap_err();
        ApiError::from(r).message
    }

    #[tokio::test]
    async fn json_rejections_name_the_field_without_positions() {
        assert_eq!(
            json_error(r#"{"identity": "alice", "ttl": "10"}"#).await,
            "field ttl: invalid duration \"10\"; use e.g. 90s"
        );
        assert_eq!(
            json_error(r#"{"ttl": "10s"}"#).await,
            "field ttl: invalid duration \"10s\"; use e.g. 90s"
        );
        assert_eq!(json_error("{}").await, "missing field `identity`");
        assert_eq!(
            json_error(r#"{"identity": 7}"#).await,
            "field identity: invalid type: integer `7`, expected a string"
        );
        assert_eq!(
            json_error("{not json").await,
            "the request body is not valid JSON"
        );
    }

    #[test]
    fn query_rejections_name_the_parameter() {
        let uri: Uri = "/v1/grants?all=yes".parse().unwrap();
        let r: QueryRejection = Query::<ListQuery>::try_from_uri(&uri).unwrap_err();
        assert_eq!(
            ApiError::from(r).message,
            "field all: provided string was not `true` or `false`"
        );
    }
}
