//! What the audit log records. Each event becomes a payload: its fields plus
//! `seq`, `time` and `type`, as JSON (those three first).

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
        decision: crate::policy::Action,
        rule: Option<String>,
        approval: Option<String>,
        /// A read's outcome, when the writer had it before it wrote the
        /// statement (one record per read).
        #[serde(flatten)]
        ran: Option<Ran>,
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

/// What a statement's outcome record says, when it is folded into the
/// statement's own record.
#[derive(Debug, Clone, Serialize)]
pub struct Ran {
    pub outcome: &'static str,
    pub tags: Vec<String>,
    pub rows: Option<u64>,
    pub sqlstate: Option<String>,
    pub duration_ms: f64,
}

impl Event {
    /// Fold `outcome` into this statement record if it is the outcome of
    /// this read (allowed, not yet folded); gives it back otherwise.
    pub fn absorb(&mut self, outcome: Event) -> Option<Event> {
        match (self, outcome) {
            (
                Event::Statement {
                    session,
                    statement,
                    class,
                    decision: crate::policy::Action::Allow,
                    ran: ran @ None,
                    ..
                },
                Event::Outcome {
                    session: s,
                    statement: n,
                    outcome,
                    tags,
                    rows,
                    sqlstate,
                    approval: None,
                    duration_ms,
                    ..
                },
            ) if *session == s && *statement == n && class.as_deref() == Some("read") => {
                *ran = Some(Ran {
                    outcome,
                    tags,
                    rows,
                    sqlstate,
                    duration_ms,
                });
                None
            }
            (_, other) => Some(other),
        }
    }

    /// The `(session, statement)` of a read's statement record whose
    /// outcome may still be folded into it.
    pub fn open_read(&self) -> Option<(u64, u64)> {
        match self {
            Event::Statement {
                session,
                statement,
                class,
                decision: crate::policy::Action::Allow,
                ran: None,
                ..
            } if class.as_deref() == Some("read") => Some((*session, *statement)),
            _ => None,
        }
    }

    /// The `(session, statement)` an outcome record is about.
    pub fn outcome_of(&self) -> Option<(u64, u64)> {
        match self {
            Event::Outcome {
                session,
                statement,
                approval: None,
                ..
            } => Some((*session, *statement)),
            _ => None,
        }
    }

    /// The payload text for record `seq`.
    pub fn payload(&self, seq: u64, time_ms: u64) -> String {
        let mut buf = Vec::new();
        self.write_payload(&mut buf, seq, &format_time(time_ms), None);
        // serde_json writes UTF-8.
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Write the payload of record `seq` at `time` (see [`format_time`]):
    /// `seq`, `time`, `type`, then the event's fields. Serialised straight
    /// into the log's buffer, once.
    pub fn write_payload(&self, buf: &mut Vec<u8>, seq: u64, time: &str, instance: Option<&str>) {
        #[derive(Serialize)]
        struct Payload<'a> {
            seq: u64,
            time: &'a str,
            /// The firewall instance whose chain this is (several share a
            /// control database).
            #[serde(skip_serializing_if = "Option::is_none")]
            instance: Option<&'a str>,
            #[serde(flatten)]
            event: &'a Event,
        }
        // Writing to a Vec fails only if a Serialize impl does, and these
        // are derived over strings and numbers.
        let _ = serde_json::to_writer(
            buf,
            &Payload {
                seq,
                time,
                instance,
                event: self,
            },
        );
    }

    /// The identity an event is about, for `export --identity`.
    pub fn identity_of(payload: &serde_json::Value) -> Option<&str> {
        payload
            .get("identity")
            .or_else(|| payload.get("user"))
            .and_then(|v| v.as_str())
    }
}

/// A record's `time`: RFC 3339 in UTC, to the millisecond.
pub fn format_time(time_ms: u64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms),
    )
    .to_string()
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
