//! `/v1/audit`: the public key, verification of the stored chain, the last
//! checkpoint and head, and streaming export. All reads; none of them holds
//! the whole log in memory.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::audit::chain;
use crate::audit::export::{self, Filter, Format};
use crate::audit::log::AuditLog;
use crate::store::Store;
use crate::time::now_ms;

/// Export lines are sent in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;

pub async fn public_key(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "public_key": state.shared.audit.public_key() }))
}

#[derive(Debug, Deserialize)]
pub struct VerifyQuery {
    /// `SEQ:HASH` of a checkpoint kept elsewhere.
    expect_head: Option<String>,
}

pub async fn verify(
    State(state): State<AdminState>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q?;
    let expect = match q.expect_head.as_deref() {
        Some(h) => Some(chain::parse_head(h).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "expect_head must be SEQ:HASH (a record number and its 64-hex hash)",
            )
        })?),
        None => None,
    };
    let public = state.shared.audit.public_key().to_owned();
    let store = state.store.clone();
    // Reading every record is disk-bound work: off the async workers. With
    // a control database, every instance's chain is checked.
    let verdict = tokio::task::spawn_blocking(move || {
        crate::audit::chains::verify_all(&store, &public, expect)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(verdict))
}

pub async fn checkpoint(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = state.store.clone();
    let head = tokio::task::spawn_blocking(move || AuditLog::open(&store)?.head())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(serde_json::json!({
        "checkpoint": state.shared.audit.last_checkpoint(),
        "head": head.map(|r| serde_json::json!({ "seq": r.seq, "hash": r.hash })),
    })))
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    since: Option<String>,
    until: Option<String>,
    identity: Option<String>,
    #[serde(default)]
    format: Format,
}

impl ExportQuery {
    pub fn is_csv(&self) -> bool {
        self.format == Format::Csv
    }
}

pub async fn export(
    State(state): State<AdminState>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let now = now_ms();
    let bound = |s: &Option<String>| {
        s.as_deref()
            .map(|s| export::parse_bound(s, now))
            .transpose()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
    };
    let filter = Filter {
        since: bound(&q.since)?,
        until: bound(&q.until)?,
        identity: q.identity.clone(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let store = state.store.clone();
    let format = q.format;
    tokio::task::spawn_blocking(move || stream_export(&store, &filter, format, &tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let content_type = match format {
        Format::Jsonl => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Write the export into `tx` chunk by chunk, from the first record at or
/// after `since` to the head as it was when the export began. Stops early
/// when the client goes away.
fn stream_export(
    store: &Arc<Store>,
    filter: &Filter,
    format: Format,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let fail = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "audit export failed");
        let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
    };
    // Every instance's chain, merged by time (just this one's, embedded).
    let records = match crate::audit::chains::merged(store, filter.since) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let mut chunk = Vec::with_capacity(CHUNK);
    if format == Format::Csv {
        chunk.extend_from_slice(export::CSV_HEADER.as_bytes());
    }
    for r in records {
        let r = match r {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let time = match (filter.since, filter.until) {
            (None, None) => None,
            _ => crate::audit::event::time_of(&r.payload),
        };
        if let (Some(until), Some(t)) = (filter.until, time)
            && t >= until
        {
            // Merged by time: nothing later matches either.
            break;
        }
        if !filter.matches(&r, time) {
            continue;
        }
        chunk.extend_from_slice(export::line(&r, format).as_bytes());
        if chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
}
