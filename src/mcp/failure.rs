//! Tool errors a model can act on: what kind of refusal or failure it was,
//! with the firewall's class, rule, reason and approval id pulled out of
//! its error (the wording is the catalogue's, `protocol::errors`, which the
//! tests below build from) and a `next` step in plain words.

use serde_json::{Value, json};
use tokio_postgres::error::DbError;

/// A tool call that did not succeed.
#[derive(Debug, Clone)]
pub struct Failure(pub Value);

/// What to tell the model to do next, per kind.
fn next_step(kind: &str) -> &'static str {
    match kind {
        "held" => {
            "a human must approve this statement: call `status` with approval_id until it is \
             approved, then call `query` with the identical statement (it runs once)"
        }
        "denied" => {
            "the firewall's policy forbids this statement for your identity; do not retry it \
             as is. Use `check` to test alternatives, or ask a human for a different grant"
        }
        "approval_denied" => "an approver refused this statement; do not run it again",
        "access_ended" => {
            "your access has ended (the grant expired or was revoked); stop and ask a human \
             for a new grant, then restart this MCP server with the new DATABASE_URL"
        }
        "connection_lost" => {
            "the connection to the firewall was lost during the statement; it may or may \
             not have run. Check before retrying a write"
        }
        "unavailable" => "the firewall could not be reached; try again shortly",
        "cancelled" => "the statement was cancelled",
        "needs_admin_url" => {
            "this tool asks the firewall's admin API: start the MCP server with --admin-url \
             (or VEIL_ADMIN_URL)"
        }
        "bad_request" => "fix the arguments and call again",
        "not_found" => "nothing by that name is visible to you; list what exists first",
        "client_error" => {
            "the statement could not be sent or its result read; check the SQL and params"
        }
        _ => "read the error; PostgreSQL refused the statement",
    }
}

impl Failure {
    pub fn new(kind: &str, message: impl Into<String>) -> Failure {
        Failure(json!({
            "error": kind,
            "message": message.into(),
            "next": next_step(kind),
        }))
    }

    fn set(mut self, key: &str, v: impl Into<Value>) -> Failure {
        self.0[key] = v.into();
        self
    }

    /// A statement's error from the firewall or PostgreSQL.
    pub fn db(e: &DbError) -> Failure {
        let msg = e.message();
        let detail = e.detail().map(str::to_owned);
        let base = |kind: &str| {
            Failure::new(kind, msg)
                .set("sqlstate", e.code().code())
                .set("detail", detail.clone())
                .set("hint", e.hint().map(str::to_owned))
        };
        if access_ended(e) {
            return base("access_ended");
        }
        if e.code().code() == "57P01" {
            // The server or an administrator ended the session.
            return base("connection_lost");
        }
        if e.code().code() != "42501" {
            return base("postgres_error");
        }
        if let Some(rest) = msg.strip_prefix("approval required: infraveil holds this ") {
            // "{class} statement as approval request {id} (approve at {link})"
            let class = rest.split(' ').next().unwrap_or("");
            let id = between(rest, "approval request ", " ");
            let link = between(rest, "(approve at ", ")");
            let (reason, rule, approvers) = held_detail(detail.as_deref().unwrap_or(""));
            return base("held")
                .set("class", class)
                .set("approval_id", id)
                .set("link", link)
                .set("reason", reason)
                .set("rule", rule)
                .set("approvers", approvers);
        }
        if let Some(rest) = msg.strip_prefix("infraveil denied this ") {
            // "{class} statement (rule {rule})"
            let class = rest.split(' ').next().unwrap_or("");
            return base("denied")
                .set("class", class)
                .set("rule", between(rest, "(rule ", ")"))
                .set("reason", detail.clone());
        }
        if let Some(rule) = msg.strip_prefix("statement denied by infraveil rule ") {
            return base("denied")
                .set("rule", rule)
                .set("reason", detail.clone());
        }
        if msg.starts_with("denied by ") && msg.contains("(approval request ") {
            return base("approval_denied")
                .set("approval_id", between(msg, "(approval request ", ")"))
                .set("reason", detail.clone());
        }
        base("denied").set("reason", detail.clone())
    }

    /// A failure to (re)connect; `ended` is why the firewall ended the
    /// last session, if it said.
    pub fn connect(e: &tokio_postgres::Error, ended: Option<&DbError>, had: bool) -> Failure {
        if let Some(end) = ended
            && access_ended(end)
        {
            return Failure::new(
                "access_ended",
                format!(
                    "access has ended: {}; reconnecting was refused ({e})",
                    end.message()
                ),
            )
            .set("hint", end.hint().map(str::to_owned));
        }
        if let Some(db) = e.as_db_error() {
            let f = Failure::db(db);
            if f.0["error"] == "access_ended" {
                return Failure::new(
                    "access_ended",
                    format!(
                        "access has ended: the firewall refused the grant ({})",
                        db.message()
                    ),
                );
            }
            return f;
        }
        let what = if had { "reconnect to" } else { "connect to" };
        Failure::new("unavailable", format!("could not {what} the firewall: {e}"))
    }

    /// An error from running a statement on an open connection.
    pub fn statement(e: &tokio_postgres::Error, ended: Option<&DbError>) -> Failure {
        if let Some(db) = e.as_db_error() {
            return Failure::db(db);
        }
        if !e.is_closed() {
            return Failure::new("client_error", e.to_string());
        }
        match ended {
            Some(end) if access_ended(end) => {
                Failure::db(end).set("message", format!("access has ended: {}", end.message()))
            }
            // Why the firewall ended it (say, PostgreSQL's own 57P01).
            Some(end) => Failure::db(end),
            None => Failure::new("connection_lost", e.to_string()),
        }
    }
}

/// The firewall ended the session because its credential stopped being
/// valid (`PgError::grant_expired` and its siblings), or refused the
/// secret (28P01: wrong, expired or revoked, it does not say which).
fn access_ended(e: &DbError) -> bool {
    match e.code().code() {
        "28P01" => true,
        "57P01" => [
            "terminating connection: grant ",
            "terminating connection: credential ",
        ]
        .iter()
        .any(|p| e.message().starts_with(p)),
        _ => false,
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let from = s.find(start)? + start.len();
    let rest = &s[from..];
    let to = rest.find(end).unwrap_or(rest.len());
    Some(rest[..to].to_owned())
}

/// `"{reason} (rule {rule}); approvers: a, b"`.
fn held_detail(d: &str) -> (String, Option<String>, Vec<String>) {
    let (head, approvers) = d.rsplit_once("; approvers: ").unwrap_or((d, ""));
    let approvers = approvers
        .split(", ")
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    match head.rsplit_once(" (rule ") {
        Some((reason, rule)) => (
            reason.to_owned(),
            Some(rule.trim_end_matches(')').to_owned()),
            approvers,
        ),
        None => (head.to_owned(), None, approvers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PgError;

    /// The message and detail of a catalogue error, as a client reads them.
    fn parts(e: &PgError) -> (String, String) {
        (e.message.clone(), e.detail.clone().unwrap_or_default())
    }

    #[test]
    fn the_catalogues_wording_is_what_is_parsed() {
        let e = PgError::approval_deferred(
            "destructive",
            "a-0123456789ab",
            "http://x/approvals/a-0123456789ab?t=T",
            ("DELETE without a WHERE", "roles.agent.approve"),
            &["oncall".to_owned(), "dba".to_owned()],
        );
        let (msg, detail) = parts(&e);
        let rest = msg
            .strip_prefix("approval required: infraveil holds this ")
            .unwrap();
        assert_eq!(rest.split(' ').next(), Some("destructive"));
        assert_eq!(
            between(rest, "approval request ", " ").as_deref(),
            Some("a-0123456789ab")
        );
        assert_eq!(
            between(rest, "(approve at ", ")").as_deref(),
            Some("http://x/approvals/a-0123456789ab?t=T")
        );
        let (reason, rule, approvers) = held_detail(&detail);
        assert_eq!(reason, "DELETE without a WHERE");
        assert_eq!(rule.as_deref(), Some("roles.agent.approve"));
        assert_eq!(approvers, ["oncall", "dba"]);

        let (msg, _) = parts(&PgError::denied(
            "privileged",
            "roles.agent.deny",
            "SET ROLE",
            None,
        ));
        let rest = msg.strip_prefix("infraveil denied this ").unwrap();
        assert_eq!(
            between(rest, "(rule ", ")").as_deref(),
            Some("roles.agent.deny")
        );
        let (msg, _) = parts(&PgError::denied_by_rule("roles.x.tables", "out of scope"));
        assert_eq!(
            msg.strip_prefix("statement denied by infraveil rule "),
            Some("roles.x.tables")
        );
        for e in [
            PgError::grant_expired("g-1", "2026-12-01T00:00:00Z"),
            PgError::grant_revoked("g-1", "alice"),
            PgError::credential_gone("g-1"),
        ] {
            assert!(
                [
                    "terminating connection: grant ",
                    "terminating connection: credential "
                ]
                .iter()
                .any(|p| e.message.starts_with(p)),
                "{}",
                e.message
            );
        }
        let (msg, _) = parts(&PgError::approval_denied("a-1", "oncall", None));
        assert_eq!(
            between(&msg, "(approval request ", ")").as_deref(),
            Some("a-1")
        );
    }
}
