//! `/v1/self`: what an identity may ask the firewall about itself, with its
//! OWN grant credential (HTTP Basic: identity and grant secret, checked
//! against the grant's verifier as a login is, every candidate in constant
//! time, failing closed), never the admin token. `infraveil mcp` uses it
//! for the answers only the firewall has: the risk check of a statement for
//! this identity (`check`), proposing a held statement (`proposals`), the
//! state of its own requests and who it is (`whoami`). Everything is scoped
//! to the caller's identity and the role of the grant it signed in with.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::auth::CredentialState;
use crate::inventory::radius;
use crate::policy::inspect::{Decision, Inspection, Origin, SessionInfo};
use crate::policy::{PolicySet, Prepared};

/// The caller, once its credential checked out.
struct Caller {
    identity: String,
    role: String,
    credential_id: String,
}

/// Checked when the identity holds no active credential, so a miss costs
/// what a real check costs (the time taken does not say who holds grants).
static DECOY: std::sync::LazyLock<crate::auth::Verifier> = std::sync::LazyLock::new(|| {
    crate::auth::Verifier::from_password_with_salt(
        "infraveil-self-decoy",
        b"self-decoy-salt!",
        crate::auth::SCRAM_ITERATIONS,
    )
});

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// `Authorization: Basic base64(identity:secret)`, checked against the
/// identity's active credentials.
async fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(|| unauthorized("sign in with your identity and grant secret (HTTP Basic)"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let (identity, secret) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let (identity, secret) = (identity.to_owned(), secret.to_owned());
    if let Some(wait) = state.self_limit.blocked(&identity) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many wrong secrets for {identity}; try again in {}s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let _ = state.shared.credentials.refresh().await;
    let active: Vec<_> = state
        .shared
        .credentials
        .candidates(&identity)
        .into_iter()
        .filter(|c| c.state == CredentialState::Active)
        .map(|c| c.credential)
        .collect();
    let matched = tokio::task::spawn_blocking(move || {
        if active.is_empty() || secret.is_empty() {
            let _ = DECOY.check_password(&secret);
            return None;
        }
        // Every candidate is checked, so timing does not say which matched.
        let hits: Vec<bool> = active
            .iter()
            .map(|c| c.verifier.check_password(&secret))
            .collect();
        active
            .into_iter()
            .zip(hits)
            .find(|(_, h)| *h)
            .map(|(c, _)| c)
    })
    .await
    .ok()
    .flatten();
    let Some(c) = matched else {
        state.self_limit.failed(&identity);
        // The secret is never logged; the name is what a client typed.
        tracing::warn!(identity = %identity.escape_debug(), "self-service sign-in refused");
        return Err(unauthorized(
            "wrong identity or secret, or the grant is no longer active",
        ));
    };
    if c.kind == crate::auth::CredentialKind::Grant
        && let Err(why) =
            crate::grants::still_permitted(&state.shared.policies(), &c.identity, &c.role)
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, why));
    }
    Ok(Caller {
        identity: c.identity,
        role: c.role,
        credential_id: c.id,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlBody {
    sql: String,
    /// The database the statement would run in (the one in the caller's
    /// DATABASE_URL); default: the one grants hand out.
    #[serde(default)]
    database: Option<String>,
    /// For proposals: why the statement is needed (shown to approvers).
    #[serde(default)]
    reason: Option<String>,
}

/// The HTTP peer, when the listener records it (the daemon's does).
fn peer(ext: &Extensions) -> std::net::SocketAddr {
    ext.get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn database(state: &AdminState, asked: Option<String>) -> String {
    asked
        .filter(|d| !d.trim().is_empty())
        .or_else(|| {
            state
                .grants
                .client_url()
                .and_then(super::inventory::database_of)
        })
        .unwrap_or_else(|| "postgres".to_owned())
}

/// The session the firewall would give this caller, for judging a
/// statement outside one: user-defined objects read as the role's upstream
/// user, as a login reads them (failing closed).
async fn session(
    state: &AdminState,
    who: &Caller,
    db: &str,
    peer: std::net::SocketAddr,
) -> Result<SessionInfo, ApiError> {
    let policies = state.shared.policies();
    let user = policies
        .role(&who.role)
        .map(|r| r.upstream_user.clone())
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "your role is no longer defined"))?;
    let params = [
        ("database".to_owned(), db.to_owned()),
        ("application_name".to_owned(), "infraveil-self".to_owned()),
    ];
    let unreadable = |e: crate::upstream::UpstreamError| {
        tracing::warn!(error = %e, "self-service: reading the upstream catalog failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database's catalog could not be read; nothing was judged",
        )
    };
    let mut up = state
        .shared
        .upstream
        .connect(&user, &params)
        .await
        .map_err(unreadable)?;
    let objects = state
        .shared
        .catalogs
        .objects(&mut up, db, &user)
        .await
        .map_err(unreadable)?;
    Ok(SessionInfo {
        id: 0,
        identity: who.identity.clone(),
        role: who.role.clone(),
        credential_id: who.credential_id.clone(),
        client_addr: peer,
        tls: true,
        database: db.to_owned(),
        objects,
    })
}

/// The firewall's own judgement of `sql` for this session, with the
/// planner's row estimate when the role limits rows, as a session sending
/// it would get.
async fn inspect(state: &AdminState, info: &SessionInfo, sql: &str) -> Inspection {
    let shared = &state.shared;
    let mut i = shared
        .inspector
        .inspect(info, &Prepared::default(), sql, Origin::SimpleQuery);
    if let Some(check) = i.row_check.take() {
        let sized = shared
            .planner
            .size(
                &shared.upstream,
                &info.database,
                &check,
                (&[], &[]),
                Vec::new(),
            )
            .await;
        if let crate::proxy::estimate::Sized::Over(why) = sized {
            check.apply_over(&why, &mut i);
        }
    }
    i
}

/// An inspection as the caller sees it.
fn judged(i: &Inspection, sql: &str) -> Value {
    let analysis = crate::classify::classify(sql);
    let mut out = json!({
        "class": i.class,
        "tables": i.tables,
        "rule": i.rule,
        "statements": analysis.statements,
    });
    match &i.decision {
        Decision::Allow => {
            out["decision"] = json!("allow");
            out["reason"] = json!("the policy allows it: it runs when sent");
        }
        Decision::Deny(e) => {
            out["decision"] = json!("deny");
            out["reason"] = json!(e.detail.clone().unwrap_or_else(|| e.message.clone()));
            out["message"] = json!(e.message);
            if let Some(h) = &e.hint {
                out["hint"] = json!(h);
            }
        }
        Decision::Hold(h) => {
            out["decision"] = json!("hold");
            out["rule"] = json!(h.rule);
            out["reason"] = json!(h.reason);
            out["approvers"] = json!(h.approvers);
            out["mode"] = json!(h.mode);
        }
    }
    out
}

/// `POST /v1/self/check`: the risk check of a statement for the caller,
/// exactly as the firewall would judge it now. Runs nothing.
pub async fn check(
    State(state): State<AdminState>,
    headers: HeaderMap,
    ext: Extensions,
    body: Result<Json<SqlBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers).await?;
    let Json(body) = body?;
    let db = database(&state, body.database);
    let info = session(&state, &who, &db, peer(&ext)).await?;
    let mut out = judged(&inspect(&state, &info, &body.sql).await, &body.sql);
    out["identity"] = json!(who.identity);
    out["role"] = json!(who.role);
    Ok(Json(out))
}

/// `POST /v1/self/proposals`: ask for approval of a statement the policy
/// holds, without running it. Creates (or finds) the pending request in
/// `defer` semantics: the identical statement sent later by this identity
/// in this role and database runs once after approval. Statements the
/// policy allows or denies get no request.
pub async fn propose(
    State(state): State<AdminState>,
    headers: HeaderMap,
    ext: Extensions,
    body: Result<Json<SqlBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&state, &headers).await?;
    let Json(body) = body?;
    let db = database(&state, body.database);
    let info = session(&state, &who, &db, peer(&ext)).await?;
    let inspection = inspect(&state, &info, &body.sql).await;
    let Decision::Hold(held) = &inspection.decision else {
        let mut out = judged(&inspection, &body.sql);
        out["proposed"] = json!(false);
        return Ok((StatusCode::OK, Json(out)));
    };
    let Some(gate) = crate::proxy::hold::Gate::of(&state.shared) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "approvals are not configured on this firewall",
        ));
    };
    let why = body.reason.unwrap_or_default();
    let (req, link, created) = gate
        .propose(&info, held, &body.sql, &why)
        .await
        .map_err(ApiError::from)?;
    // On the record as a held statement would be: who, what, the decision
    // and the request it is bound to (`via`: not a session's).
    state
        .shared
        .audit
        .append(crate::audit::Event::Statement {
            session: 0,
            statement: 0,
            identity: who.identity.clone(),
            role: who.role.clone(),
            grant: who.credential_id.clone(),
            via: "proposal",
            text: crate::classify::redact(&body.sql).into_owned(),
            class: inspection.class.map(|c| c.to_string()),
            tables: inspection.tables.clone(),
            decision: crate::policy::Action::Hold,
            rule: Some(held.rule.clone()),
            approval: Some(req.id.clone()),
            ran: None,
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    tracing::info!(approval = %req.id, identity = %who.identity, created, "statement proposed through the admin API");
    let mut out = judged(&inspection, &body.sql);
    out["proposed"] = json!(true);
    out["created"] = json!(created);
    out["approval"] = request_json(&req, Some(&link));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)))
}

fn request_json(r: &crate::approvals::ApprovalView, link: Option<&str>) -> Value {
    json!({
        "id": r.id,
        "status": r.status,
        "statement": r.statement,
        "class": r.class,
        "tables": r.tables,
        "role": r.role,
        "database": r.database,
        "approvers": r.approvers,
        "preview": r.preview,
        "reason": r.reason,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at,
        "note": r.note,
        "executed_at": r.executed_at,
        "outcome": r.outcome,
        "link": link,
    })
}

/// `GET /v1/self/approvals/{id}`: one of the caller's own requests. Someone
/// else's gets the same answer as one that does not exist.
pub async fn approval(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no request {id} of yours"));
    let approvals = state.approvals.as_ref().ok_or_else(not_found)?;
    let _ = approvals.load(&id).await;
    let req = approvals
        .get(&id)
        .filter(|r| r.identity == who.identity)
        .ok_or_else(not_found)?;
    let link = approvals.link_for(&id);
    Ok(Json(request_json(&req, link.as_deref())))
}

#[derive(Debug, Deserialize)]
pub struct WhoamiQuery {
    database: Option<String>,
}

/// `GET /v1/self/whoami`: the caller's identity, role, grant and what it
/// may do (its blast radius in that role).
pub async fn whoami(
    State(state): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<WhoamiQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers).await?;
    let Query(q) = q?;
    let db = database(&state, q.database);
    let policies: Arc<PolicySet> = state.shared.policies();
    let kind = policies.identity(&who.identity).map(|i| i.kind);
    let role = policies.role(&who.role).map(|r| {
        json!({
            "name": who.role,
            "allow": r.allow,
            "approve": r.approve,
            "deny": r.deny,
            "tables": r.tables,
            "approvers": r.approvers,
            "mode": r.mode,
        })
    });
    let grant = state.grants.get(&who.credential_id);
    let grants = state.grants.list(false);
    let dev = state.grants.dev_credentials();
    let radius = radius::blast_radius(
        policies,
        &state.shared.upstream,
        &db,
        &who.identity,
        Some(&who.role),
        &radius::Held {
            grants: &grants,
            dev: &dev,
        },
    )
    .await?;
    Ok(Json(json!({
        "identity": who.identity,
        "kind": kind,
        "role": role,
        "credential": who.credential_id,
        "grant": grant.map(|g| json!({
            "id": g.id,
            "status": g.status,
            "issued_at": g.issued_at,
            "expires_at": g.expires_at,
            "issued_by": g.issued_by,
            "reason": g.reason,
        })),
        "database": db,
        "blast_radius": radius,
    })))
}
