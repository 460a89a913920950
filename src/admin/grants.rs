//! `/v1/grants`: issue, list, show and revoke grants.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, ListQuery};
use crate::auth::CredentialState;
use crate::grants::{GrantError, GrantView, IssueRequest, Issued, session_ended};

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> ApiError {
        let status = match &e {
            GrantError::NotFound(_) => StatusCode::NOT_FOUND,
            GrantError::AlreadyRevoked(_) | GrantError::AlreadyExpired(_) => StatusCode::CONFLICT,
            GrantError::Invalid(_) => StatusCode::BAD_REQUEST,
            GrantError::Store(_) | GrantError::Audit(_) => {
                tracing::error!(error = %e, "state store failure");
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The request was understood; policy says no.
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

pub async fn list(
    State(state): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    let Query(q) = q?;
    // Grants other instances issued or revoked a moment ago, too.
    state.grants.sync().await.map_err(GrantError::from)?;
    Ok(Json(state.grants.list(q.all)))
}

pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<GrantView>, ApiError> {
    state.grants.sync().await.map_err(GrantError::from)?;
    state
        .grants
        .get(&id)
        .map(Json)
        .ok_or_else(|| GrantError::NotFound(id).into())
}

pub async fn issue(
    State(state): State<AdminState>,
    body: Result<Json<IssueRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Issued>), ApiError> {
    let Json(req) = body?;
    let policies = state.shared.policies();
    let issued = state.grants.issue(&policies, req).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[derive(Debug, Default, Deserialize)]
pub struct RevokeRequest {
    /// Who revokes (recorded).
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    #[serde(flatten)]
    pub grant: GrantView,
    /// Live sessions told to end.
    pub sessions_ended: usize,
}

pub async fn revoke(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Option<Json<RevokeRequest>>,
) -> Result<Json<Revoked>, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let by = req
        .by
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("admin")
        .to_owned();
    Ok(Json(revoke_and_end(&state, &id, by, req.reason).await?))
}

/// Revoke grant `id` and end the live sessions on it (the API and the
/// console alike).
pub(super) async fn revoke_and_end(
    state: &AdminState,
    id: &str,
    by: String,
    reason: Option<String>,
) -> Result<Revoked, GrantError> {
    let grant = state.grants.revoke(id, &by, reason).await?;
    let error = session_ended(id, &CredentialState::Revoked { by });
    let sessions_ended = state.shared.registry.terminate_credential(id, &error);
    Ok(Revoked {
        grant,
        sessions_ended,
    })
}
