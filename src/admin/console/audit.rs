//! The audit log, for the admin sign-in: filter by identity, time and
//! class, page through the records, see for each whether the hash chain
//! verifies from the first record up to it and which signature vouches
//! for it; export with the same bytes `veilctl audit export` streams (the
//! same handler answers both).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Signed;
use super::{Nav, page as layout};
use crate::admin::AdminState;
use crate::audit::chain::{ChainVerifier, Record};
use crate::audit::export::{Filter, parse_bound};
use crate::audit::log::AuditLog;
use crate::store::Store;
use crate::time::now_ms;

/// Records a page shows.
const PER_PAGE: usize = 50;

#[derive(Debug, Default, Deserialize, Clone)]
pub struct AuditForm {
    #[serde(default)]
    identity: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    page: usize,
}

impl AuditForm {
    fn query(&self, page: usize) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("identity", &self.identity)
            .append_pair("since", &self.since)
            .append_pair("until", &self.until)
            .append_pair("class", &self.class)
            .append_pair("page", &page.to_string())
            .finish()
    }
}

/// Where the chain stands at one record.
enum Chain {
    /// Linked from the first record, and vouched for by the signature on
    /// record `0`.
    Signed(u64),
    /// Linked from the first record; no signature after it yet.
    Linked,
    /// Verification failed at or before this record.
    Broken(String),
}

struct Row {
    record: Record,
    payload: serde_json::Value,
    chain: Chain,
}

/// `GET /console/audit`.
pub async fn page(
    State(state): State<AdminState>,
    signed: Signed,
    q: Result<Query<AuditForm>, QueryRejection>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let f = q.map(|Query(q)| q).unwrap_or_default();
    let store = state.store.clone();
    let key = crate::audit::key::parse_public(state.shared.audit.public_key());
    let form = f.clone();
    let loaded = tokio::task::spawn_blocking(move || match key {
        Some(key) => load(&store, &form, key),
        None => Err("the audit public key cannot be read".to_owned()),
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let body = html! {
        (filters(&f))
        @match loaded {
            Err(e) => p.error role="alert" { (e) },
            Ok((rows, more)) => {
                @if rows.is_empty() { p.empty { "No records match." } }
                @else { (table(&rows)) }
                nav.row aria-label="Pages" {
                    @if f.page > 0 { a href={ "/console/audit?" (f.query(f.page - 1)) } rel="prev" { "← Previous page" } }
                    @if more { a href={ "/console/audit?" (f.query(f.page + 1)) } rel="next" { "Next page →" } }
                }
            },
        }
    };
    layout(StatusCode::OK, "Audit log", Some(&signed), Nav::Audit, body)
}

fn filters(f: &AuditForm) -> Markup {
    let classes = [
        "",
        "read",
        "write",
        "ddl",
        "destructive",
        "privileged",
        "unknown",
    ];
    let export = |format: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("identity", &f.identity)
            .append_pair("since", &f.since)
            .append_pair("until", &f.until)
            .append_pair("format", format)
            .finish()
    };
    html! {
        form.card method="get" action="/console/audit" {
            div.row {
                p { label for="identity" { "Identity" } input #identity name="identity" value=(f.identity); }
                p { label for="since" { "Since" } input #since name="since" placeholder="2026-12-01T09:00:00Z, 2026-12-01 or 1h" value=(f.since); }
                p { label for="until" { "Until" } input #until name="until" value=(f.until); }
                p {
                    label for="class" { "Class" }
                    select #class name="class" {
                        @for c in classes { option value=(c) selected[c == f.class] { @if c.is_empty() { "(any)" } @else { (c) } } }
                    }
                }
            }
            p.buttons {
                button.primary type="submit" { "Filter" }
                a href={ "/console/audit/export?" (export("jsonl")) } download="audit.jsonl" { "Export JSON lines" }
                a href={ "/console/audit/export?" (export("csv")) } download="audit.csv" { "Export CSV" }
            }
            small { "Exports stream the same bytes as " code { "veilctl audit export" } " with the identity and time filters (not the class filter), to check elsewhere with the public key." }
        }
    }
}

fn table(rows: &[Row]) -> Markup {
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    html! {
        div.scroll {
            table #audit {
                thead { tr { th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "Identity" } th scope="col" { "Class / decision" } th scope="col" { "Detail" } th scope="col" { "Chain" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (r.record.seq) }
                            td { (text(&r.payload, "time")) }
                            td { (text(&r.payload, "type")) }
                            td { (crate::audit::Event::identity_of(&r.payload).unwrap_or("-")) }
                            td { (text(&r.payload, "class")) " " (text(&r.payload, "decision")) }
                            td { code.stmt { (detail(&r.payload)) } }
                            td {
                                @match &r.chain {
                                    Chain::Signed(at) => { span.ok { "verifies" } small { "signed at " (at) } },
                                    Chain::Linked => { span.ok { "linked" } small { "no signature after it yet" } },
                                    Chain::Broken(why) => { span.bad { "does not verify" } small { (why) } },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The part of a record a reader wants: a statement's text, else the
/// payload without the fields the other columns show.
fn detail(p: &serde_json::Value) -> String {
    if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
        return crate::approvals::notify::reveal(t).0;
    }
    let mut rest = p.clone();
    if let Some(o) = rest.as_object_mut() {
        for k in ["type", "time", "seq", "identity", "class", "decision"] {
            o.remove(k);
        }
    }
    let s = rest.to_string();
    if s.chars().count() > 300 {
        s.chars().take(300).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

/// The page's records (and whether more follow), each with where the
/// chain stands at it.
fn load(
    store: &Store,
    f: &AuditForm,
    key: ed25519_dalek::VerifyingKey,
) -> Result<(Vec<Row>, bool), String> {
    let now = now_ms();
    let bound = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| parse_bound(s, now)).transpose()
    };
    let filter = Filter {
        since: bound(&f.since)?,
        until: bound(&f.until)?,
        identity: Some(f.identity.trim().to_owned()).filter(|s| !s.is_empty()),
    };
    let class = Some(f.class.trim()).filter(|c| !c.is_empty());
    let log = AuditLog::open(store).map_err(|e| e.to_string())?;
    let head = log.head().map_err(|e| e.to_string())?.map_or(0, |r| r.seq);
    let start = match filter.since {
        Some(t) => log.seek_time(t).map_err(|e| e.to_string())?,
        None => 1,
    };
    let mut rows = Vec::new();
    let mut skip = f.page.saturating_mul(PER_PAGE);
    for r in log.from(start) {
        let r = r.map_err(|e| e.to_string())?;
        if r.seq > head || rows.len() > PER_PAGE {
            break;
        }
        let time = crate::audit::event::time_of(&r.payload);
        if let (Some(until), Some(t)) = (filter.until, time)
            && t >= until
        {
            break;
        }
        if !filter.matches(&r, time) {
            continue;
        }
        let payload: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_default();
        if class.is_some_and(|c| payload.get("class").and_then(|x| x.as_str()) != Some(c)) {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        rows.push(Row {
            record: r,
            payload,
            chain: Chain::Linked,
        });
    }
    let more = rows.len() > PER_PAGE;
    rows.truncate(PER_PAGE);
    verify(&log, &mut rows, key, head)?;
    Ok((rows, more))
}

/// Walk the chain from the first record to the first signature at or
/// after the page's last record, and mark each row.
fn verify(
    log: &AuditLog,
    rows: &mut [Row],
    key: ed25519_dalek::VerifyingKey,
    head: u64,
) -> Result<(), String> {
    let Some(last) = rows.last().map(|r| r.record.seq) else {
        return Ok(());
    };
    let mut v = ChainVerifier::from_genesis(key);
    // (seq of a verified signature, seq of the first bad record and why)
    let mut signatures: Vec<u64> = Vec::new();
    let mut broken: Option<(u64, String)> = None;
    for r in log.from(0) {
        let r = r.map_err(|e| e.to_string())?;
        if r.seq > head {
            break;
        }
        if let Err(p) = v.check(&r) {
            broken = Some((p.seq, p.to_string()));
            break;
        }
        if r.sig.is_some() {
            signatures.push(r.seq);
            if r.seq >= last {
                break;
            }
        }
    }
    for row in rows {
        let seq = row.record.seq;
        row.chain = match &broken {
            Some((at, why)) if seq >= *at => Chain::Broken(format!("record {at}: {why}")),
            _ => match signatures.iter().find(|s| **s >= seq) {
                Some(s) => Chain::Signed(*s),
                None => Chain::Linked,
            },
        };
    }
    Ok(())
}

/// `GET /console/audit/export?format=jsonl|csv&…`: the API's export
/// handler itself, so the bytes are the CLI's.
pub async fn export(
    state: State<AdminState>,
    signed: Signed,
    q: Result<Query<crate::admin::audit::ExportQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = signed.admin_only() {
        return r.into_response();
    }
    let csv = matches!(&q, Ok(Query(q)) if q.is_csv());
    match crate::admin::audit::export(state, q).await {
        Ok(mut resp) => {
            let name = if csv { "audit.csv" } else { "audit.jsonl" };
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => e.into_response(),
    }
}
