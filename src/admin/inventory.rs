//! `/v1/inventory`: who could touch production. All GETs and all reads:
//! the blast radius logs in upstream as each role's user only to read the
//! catalog (in a read-only transaction), the review and usage read the
//! policies, grants and audit log.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::inventory::radius::{self, BlastRadius};
use crate::inventory::review::{self, AccessReview};
use crate::inventory::usage::{self, IdentityUse};
use crate::inventory::{InventoryError, review::in_window};
use crate::time::now_ms;

/// The longest review window, in days.
const MAX_DAYS: u64 = 3650;
const DAY_MS: u64 = 24 * 3600 * 1000;

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> ApiError {
        let status = match &e {
            InventoryError::UnknownIdentity(_)
            | InventoryError::NotItsRole { .. }
            | InventoryError::Invalid(_) => StatusCode::BAD_REQUEST,
            InventoryError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            InventoryError::Policy(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

#[derive(Debug, Deserialize)]
pub struct RadiusQuery {
    identity: String,
    role: Option<String>,
    /// Default: the database in the URL grants hand out, else `postgres`.
    database: Option<String>,
}

pub async fn blast_radius(
    State(state): State<AdminState>,
    q: Result<Query<RadiusQuery>, QueryRejection>,
) -> Result<Json<BlastRadius>, ApiError> {
    let Query(q) = q?;
    let report = radius_report(&state, &q.identity, q.role.as_deref(), q.database).await?;
    Ok(Json(report))
}

/// The blast radius of `identity` (in `role`, or every role it may hold),
/// for the API and the console alike.
pub(super) async fn radius_report(
    state: &AdminState,
    identity: &str,
    role: Option<&str>,
    database: Option<String>,
) -> Result<BlastRadius, ApiError> {
    let database = database
        .filter(|d| !d.trim().is_empty())
        .or_else(|| state.grants.client_url().and_then(database_of))
        .unwrap_or_else(|| "postgres".to_owned());
    let grants = state.grants.list(false);
    let dev = state.grants.dev_credentials();
    Ok(radius::blast_radius(
        state.shared.policies(),
        &state.shared.upstream,
        &database,
        identity,
        role,
        &radius::Held {
            grants: &grants,
            dev: &dev,
        },
    )
    .await?)
}

#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    /// Roles nobody used in this many days are idle; default 90.
    days: Option<u64>,
}

pub async fn access_review(
    State(state): State<AdminState>,
    q: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<Json<AccessReview>, ApiError> {
    let Query(q) = q?;
    Ok(Json(review_report(&state, q.days.unwrap_or(90)).await?))
}

/// The access review over the last `days` days, for the API and the
/// console alike.
pub(super) async fn review_report(state: &AdminState, days: u64) -> Result<AccessReview, ApiError> {
    if days == 0 || days > MAX_DAYS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("days must be between 1 and {MAX_DAYS}"),
        ));
    }
    let now = now_ms();
    let since = now.saturating_sub(days * DAY_MS);
    let store = state.store.clone();
    let policies = state.shared.policies();
    let dev = state.grants.dev_credentials();
    let built = tokio::task::spawn_blocking(move || -> Result<AccessReview, InventoryError> {
        let grants = crate::grants::stored(&store)?;
        // Reach back to the oldest grant reviewed, so one issued before the
        // window and used then does not read as unused.
        let from = grants
            .iter()
            .filter(|g| in_window(g, now, since))
            .map(|g| g.issued_at)
            .min()
            .map_or(since, |t| t.min(since));
        let mut usage = usage::scan(&store, from, None)?;
        // Last use of roles counts inside the window only.
        usage
            .roles_used
            .retain(|_, at| crate::audit::event::parse_time(at).is_some_and(|t| t >= since));
        let input = review::Input {
            grants: &grants,
            dev: &dev,
            usage: &usage,
        };
        Ok(review::build(&policies, &input, now, days, since))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(built)
}

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    identity: String,
    /// RFC 3339, a date, a duration ago (`7d`) or Unix ms; default 7d.
    since: Option<String>,
}

pub async fn identity_usage(
    State(state): State<AdminState>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<IdentityUse>, ApiError> {
    let Query(q) = q?;
    let since = crate::audit::export::parse_bound(q.since.as_deref().unwrap_or("7d"), now_ms())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let store = state.store.clone();
    let identity = q.identity.clone();
    let mut usage =
        tokio::task::spawn_blocking(move || usage::scan(&store, since, Some(&identity)))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(
        usage.identities.remove(&q.identity).unwrap_or_default(),
    ))
}

/// The database a client URL names, if any.
pub(super) fn database_of(url: &url::Url) -> Option<String> {
    let db = percent_decode(url.path().trim_start_matches('/'))?;
    (!db.is_empty()).then_some(db)
}

/// `%XX` escapes of a URL path decoded; `None` when they are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_comes_from_the_client_url() {
        let db = |u: &str| database_of(&url::Url::parse(u).unwrap());
        assert_eq!(
            db("postgres://h:1/app?sslmode=require").as_deref(),
            Some("app")
        );
        assert_eq!(db("postgres://h:1/my%20db").as_deref(), Some("my db"));
        assert_eq!(db("postgres://h:1/").as_deref(), None);
        assert_eq!(db("postgres://h:1/100%").as_deref(), Some("100%"));
    }
}
