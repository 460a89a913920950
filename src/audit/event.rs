//! What the audit log records. Each event becomes a payload: its fields plus
//! `seq`, `time` and `type`, as JSON with sorted keys.

use serde::Serialize;

/// One auditable event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum Event {
    #[serde(rename = "daemon.start")]
    DaemonStart { version: String, pid: u32 },
    #[serde(rename = "daemon.stop")]
    DaemonStop {},
    #[serde(rename = "policy.loaded")]
    PolicyLoaded {
        reload: bool,
        roles: usize,
        identities: usize,
        dir: String,
    },
    #[serde(rename = "connection.opened")]
    ConnectionOpened {
        session: u64,
        client: String,
        tls: bool,
    },
    #[serde(rename = "auth.succeeded")]
    AuthSucceeded {
        session: u64,
        identity: String,
        role: String,
        grant: String,
    },
    #[serde(rename = "auth.failed")]
    AuthFailed {
        session: u64,
        user: String,
        reason: String,
    },
    #[serde(rename = "connection.closed")]
    ConnectionClosed {
        session: u64,
        identity: Option<String>,
        grant: Option<String>,
        reason: String,
    },
    /// A statement and the decision about it, recorded before it is
    /// forwarded.
    #[serde(rename = "statement")]
    Statement {
        session: u64,
        /// Per session, in order; outcomes refer to it.
        statement: u64,
        identity: String,
        role: String,
        grant: String,
        /// `query` or `parse`.
        via: &'static str,
        text: String,
        class: Option<String>,
        tables: Vec<String>,
        decision: &'static str,
        rule: Option<String>,
        approval: Option<String>,
    },
    /// One execution of a prepared statement that changes data (extended
    /// protocol: the statement record was written at `Parse`; this one is
    /// durable before each `Execute` goes upstream).
    #[serde(rename = "statement.execute")]
    Execute {
        session: u64,
        identity: String,
        statement: u64,
        portal: String,
    },
    /// What happened when it ran.
    #[serde(rename = "statement.outcome")]
    Outcome {
        session: u64,
        /// Repeated from the statement so `export --identity` keeps it.
        identity: String,
        statement: u64,
        /// `ok`, `error`, or `skipped` (after an earlier error in a pipeline).
        outcome: &'static str,
        tags: Vec<String>,
        rows: Option<u64>,
        sqlstate: Option<String>,
        /// The approval the statement ran under, when it was held.
        #[serde(skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
        duration_ms: f64,
    },
    #[serde(rename = "grant.issued")]
    GrantIssued {
        grant: String,
        identity: String,
        role: String,
        expires_at: Option<String>,
        issued_by: String,
        reason: Option<String>,
    },
    #[serde(rename = "grant.revoked")]
    GrantRevoked {
        grant: String,
        identity: String,
        by: String,
        reason: Option<String>,
    },
    #[serde(rename = "grant.expired")]
    GrantExpired { grant: String, identity: String },
    #[serde(rename = "approval.requested")]
    ApprovalRequested {
        approval: String,
        identity: String,
        role: String,
        grant: String,
        session: u64,
        class: String,
        statement_hash: String,
        tables: Vec<String>,
        mode: String,
        notified: Option<String>,
    },
    #[serde(rename = "approval.decided")]
    ApprovalDecided {
        approval: String,
        status: String,
        by: Option<String>,
        via: Option<String>,
        note: Option<String>,
    },
    #[serde(rename = "approval.executed")]
    ApprovalExecuted { approval: String },
    #[serde(rename = "approver.enrolled")]
    ApproverEnrolled {
        approver: String,
        identity: String,
        by: String,
    },
    #[serde(rename = "approver.revoked")]
    ApproverRevoked {
        approver: String,
        identity: String,
        by: String,
    },
    /// The head of the chain at this point, signed as part of it; keep it
    /// elsewhere to detect a truncated tail (`veilctl audit verify
    /// --expect-head SEQ:HASH`).
    #[serde(rename = "checkpoint")]
    Checkpoint { head_seq: u64, head_hash: String },
}

impl Event {
    /// The payload text for record `seq`.
    pub fn payload(&self, seq: u64, time_ms: u64) -> String {
        let mut v = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            // Every variant is a struct: always an object.
            _ => serde_json::Map::new(),
        };
        v.insert("seq".into(), seq.into());
        v.insert(
            "time".into(),
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms),
            )
            .to_string()
            .into(),
        );
        serde_json::Value::Object(v).to_string()
    }

    /// The identity an event is about, for `export --identity`.
    pub fn identity_of(payload: &serde_json::Value) -> Option<&str> {
        payload
            .get("identity")
            .or_else(|| payload.get("user"))
            .and_then(|v| v.as_str())
    }
}

/// A payload's `time`, in Unix milliseconds.
pub fn time_of(payload: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Time<'a> {
        #[serde(borrow)]
        time: Option<std::borrow::Cow<'a, str>>,
    }
    let t: Time = serde_json::from_str(payload).ok()?;
    parse_time(t.time.as_deref()?)
}

/// An RFC 3339 time in Unix milliseconds.
pub fn parse_time(s: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}
