//! The catalogue of every error Infraveil itself sends a client: one named
//! constructor each, with its SQLSTATE, severity and wording written once
//! (the table test below lists them all). PostgreSQL's own errors pass
//! through untouched; these are the firewall's.
//!
//! Wording follows PostgreSQL's where the situation is PostgreSQL's
//! (`portal "x" does not exist`), and otherwise says what infraveil did and
//! what to do next.

use std::fmt::Display;
use std::time::Duration;

use super::PgError;
use super::sqlstate as code;

/// Bytes on the wire the firewall will not take or cannot follow.
impl PgError {
    /// Bytes that are not valid protocol.
    pub fn protocol_violation(message: impl Into<String>) -> Self {
        Self::fatal(code::PROTOCOL_VIOLATION, message)
    }

    /// One of the firewall's own messages could not be encoded.
    pub fn encode_failed(e: impl Display) -> Self {
        Self::fatal(code::INTERNAL_ERROR, format!("cannot encode message: {e}"))
    }

    pub fn unsupported_protocol(major: u16, minor: u16) -> Self {
        Self::fatal(
            code::FEATURE_NOT_SUPPORTED,
            format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"),
        )
    }

    /// PostgreSQL would stop reading at the zero; the firewall refuses
    /// rather than inspect less than PostgreSQL might run.
    pub fn zero_byte_in_statement() -> Self {
        Self::error(
            code::PROTOCOL_VIOLATION,
            "invalid message format: statement contains a zero byte",
        )
    }

    pub fn invalid_utf8_statement() -> Self {
        Self::error(
            code::CHARACTER_NOT_IN_REPERTOIRE,
            "invalid byte sequence for encoding \"UTF8\" in statement",
        )
    }

    /// A client that sends this much while its answers are pending is not
    /// reading them.
    pub fn sent_too_much_while_waiting() -> Self {
        Self::fatal(
            code::PROGRAM_LIMIT_EXCEEDED,
            "too much sent while infraveil waited for PostgreSQL's answer",
        )
    }

    /// A message PostgreSQL would skip too (after an error until Sync, or
    /// inside COPY).
    pub fn not_running_until_sync() -> Self {
        Self::error(
            code::IN_FAILED_SQL_TRANSACTION,
            "infraveil refused this message: PostgreSQL is not running commands until the next Sync or the end of COPY",
        )
    }

    pub fn too_many_names(max: usize) -> Self {
        Self::error(
            code::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "infraveil keeps at most {max} prepared statements, portals and pending requests per session"
            ),
        )
        .with_hint("close or DEALLOCATE statements no longer used, and Sync pipelines")
    }

    pub fn function_call_unsupported() -> Self {
        Self::error(
            code::FEATURE_NOT_SUPPORTED,
            "the FunctionCall protocol message is not supported through infraveil",
        )
        .with_hint("call the function with SELECT instead")
    }

    pub fn statement_missing(name: &str) -> Self {
        Self::error(
            code::INVALID_SQL_STATEMENT_NAME,
            if name.is_empty() {
                "unnamed prepared statement does not exist".to_owned()
            } else {
                format!("prepared statement \"{name}\" does not exist")
            },
        )
    }

    pub fn portal_missing(name: &str) -> Self {
        Self::error(
            code::INVALID_CURSOR_NAME,
            format!("portal \"{name}\" does not exist"),
        )
    }

    pub fn client_too_slow() -> Self {
        Self::fatal(
            code::CONNECTION_FAILURE,
            "client did not read results in time",
        )
    }

    pub fn upstream_invalid_message() -> Self {
        Self::fatal(
            code::CONNECTION_FAILURE,
            "infraveil received an invalid message from the upstream database",
        )
    }

    pub fn lost_track_of_statements() -> Self {
        Self::fatal(
            code::PROTOCOL_VIOLATION,
            "infraveil lost track of this session's prepared statements; the session is ended",
        )
    }

    /// PostgreSQL reported a setting under which it would read statements
    /// differently from the classifier.
    pub fn unsafe_setting(detail: impl Into<String>) -> Self {
        Self::fatal(
            code::PROTOCOL_VIOLATION,
            "infraveil ended the session: a setting changed that makes PostgreSQL read statements differently from infraveil",
        )
        .with_detail(detail)
    }
}

/// Logging in.
impl PgError {
    /// The one answer to every failed login: it never says whether the
    /// identity exists, so the firewall cannot be used to enumerate them.
    pub fn auth_failed(user: &str) -> Self {
        // One hint for every failure (unknown user, wrong secret, expired
        // or revoked grant): it tells a user where to look and an attacker
        // nothing.
        Self::fatal(
            code::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
        .with_hint(
            "the secret is wrong, or the grant expired or was revoked; an admin can see which with: veilctl grants list --all",
        )
    }

    pub fn too_many_clients() -> Self {
        Self::fatal(
            code::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        )
    }

    pub fn too_many_logging_in() -> Self {
        Self::fatal(
            code::TOO_MANY_CONNECTIONS,
            "too many clients are logging in at once; try again",
        )
    }

    /// A plaintext client when `[tls] require` is on: 28000, as PostgreSQL
    /// answers a client no `hostssl`-only rule admits.
    pub fn tls_required() -> Self {
        Self::fatal(
            code::INVALID_AUTHORIZATION_SPECIFICATION,
            "connection requires TLS (sslmode=require or stronger)",
        )
        .with_hint(
            "connect with sslmode=require, or verify-full with sslrootcert naming the firewall's CA certificate",
        )
    }

    pub fn no_user_name() -> Self {
        Self::fatal(
            code::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        )
    }

    /// The proof matched, but the grant stopped being valid meanwhile.
    pub fn grant_not_valid(grant: &str, why: impl Display) -> Self {
        Self::fatal(
            code::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("grant {grant} is no longer valid: {why}"),
        )
    }

    pub fn role_not_in_policy(role: &str) -> Self {
        Self::fatal(
            code::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("role \"{role}\" of this credential is not defined by any policy"),
        )
    }

    /// PostgreSQL's own message, passed on.
    pub fn no_such_database(message: impl Into<String>) -> Self {
        Self::fatal(code::INVALID_CATALOG_NAME, message)
    }

    pub fn upstream_unreachable(detail: impl Into<String>) -> Self {
        Self::fatal(
            code::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            "infraveil could not connect to the upstream database",
        )
        .with_detail(detail)
    }

    pub fn upstream_catalog_unreadable() -> Self {
        Self::fatal(
            code::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            "infraveil could not read the upstream database's catalog",
        )
    }

    /// A startup parameter the firewall cannot pass on safely.
    pub fn startup_parameter_refused(message: impl Into<String>) -> Self {
        Self::fatal(code::FEATURE_NOT_SUPPORTED, message)
    }
}

/// A live session ended by the firewall.
impl PgError {
    pub fn shutting_down() -> Self {
        Self::fatal(
            code::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        )
        .with_detail("infraveil is shutting down")
    }

    pub fn grant_expired(grant: &str, at: &str) -> Self {
        Self::credential_ended(format!(
            "terminating connection: grant {grant} expired at {at}"
        ))
    }

    pub fn grant_revoked(grant: &str, by: &str) -> Self {
        Self::credential_ended(format!(
            "terminating connection: grant {grant} was revoked by {by}"
        ))
    }

    pub fn credential_gone(credential: &str) -> Self {
        Self::credential_ended(format!(
            "terminating connection: credential {credential} is no longer valid"
        ))
    }

    fn credential_ended(message: String) -> Self {
        Self::fatal(code::ADMIN_SHUTDOWN, message).with_hint(
            "ask for a new grant: veilctl grants issue --identity ... --role ... --ttl ...",
        )
    }

    /// A record could not be made durable: the statement was not
    /// forwarded and the session ends.
    pub fn audit_write_failed(cause: impl Display) -> Self {
        Self::fatal(code::IO_ERROR, cause.to_string()).with_hint(
            "the statement was not forwarded; ask the operator to check infraveil's audit log",
        )
    }

    /// The control database cannot take audit records: what must be
    /// durable first (a write) is refused; reads go on.
    pub fn audit_waiting() -> Self {
        Self::error(
            code::IO_ERROR,
            "infraveil refuses write statements: its control database cannot take audit records now",
        )
        .with_hint("reads still run; try the write again once the control database is back")
    }

    /// This instance has lost its control database: no new sessions.
    pub fn control_unavailable(why: impl Display) -> Self {
        Self::fatal(
            code::CANNOT_CONNECT_NOW,
            format!("infraveil cannot reach its control database ({why}); new sessions are refused until it is back"),
        )
        .with_hint("sessions already open go on with reads; ask the operator to check [state] url")
    }

    /// The log failed earlier: every statement is refused.
    pub fn audit_unhealthy() -> Self {
        Self::error(
            code::IO_ERROR,
            "infraveil refuses statements: the audit log cannot be written",
        )
        .with_hint("ask the operator to check infraveil's logs and data directory")
    }
}

/// Policy decisions.
impl PgError {
    /// A denial naming the rule; the classifier's reason in DETAIL.
    pub fn denied_by_rule(rule: &str, reason: impl Into<String>) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("statement denied by infraveil rule {rule}"),
        )
        .with_detail(reason)
    }

    /// A denial by class: rule and class in the message, the reason in
    /// DETAIL, and advice (say, a narrower statement) as the hint.
    pub fn denied(class: impl Display, rule: &str, reason: &str, advice: Option<&str>) -> Self {
        let e = Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("infraveil denied this {class} statement (rule {rule})"),
        )
        .with_detail(reason);
        match advice {
            Some(a) => e.with_hint(a),
            None => e,
        }
    }

    /// A held statement when no approval can be asked for (there is no
    /// admin API to decide it on).
    pub fn held_without_approvals(
        class: impl Display,
        rule: &str,
        reason: &str,
        approvers: &[String],
    ) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!(
                "approval required: infraveil holds this {class} statement for a human (rule {rule})"
            ),
        )
        .with_detail(reason)
        .with_hint(format!(
            "approvers: {}; approvals are decided over the admin API, which is not configured, so the statement did not run",
            approvers.join(", ")
        ))
    }

    /// `EXECUTE name` prepared would run whatever `name` is when executed.
    pub fn execute_not_prepared() -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            "infraveil does not prepare EXECUTE statements",
        )
        .with_hint("send EXECUTE as a simple query, or bind the prepared statement itself")
    }

    pub fn fetch_refused(portal: &str, why: &str) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("FETCH of portal \"{portal}\" {why}"),
        )
    }

    /// Bind or Describe of a statement refused at Parse.
    pub fn refused_when_prepared() -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            "infraveil refused this statement when it was prepared",
        )
    }

    pub fn portal_not_run_through_protocol(name: &str) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("infraveil does not run portal \"{name}\" through the protocol"),
        )
        .with_hint("read a SQL cursor with FETCH")
    }

    pub fn portal_bound_without_approval() -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            "this portal was bound without an approval",
        )
    }

    pub fn approval_spent() -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            "an approved statement runs once; bind it again to ask for a new approval",
        )
    }
}

/// Held statements and their approvals.
impl PgError {
    pub fn approval_cancelled(request: &str) -> Self {
        Self::error(
            code::QUERY_CANCELED,
            "canceling statement due to user request",
        )
        .with_detail(format!("approval request {request} was cancelled"))
    }

    /// `defer` mode's answer: the request to approve, and what to do then.
    pub fn approval_deferred(
        class: impl Display,
        request: &str,
        link: &str,
        (reason, rule): (&str, &str),
        approvers: &[String],
    ) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!(
                "approval required: infraveil holds this {class} statement as approval request {request} (approve at {link})"
            ),
        )
        .with_detail(format!(
            "{reason} (rule {rule}); approvers: {}",
            approvers.join(", ")
        ))
        .with_hint(format!(
            "once {request} is approved, send the identical statement again: it runs once"
        ))
    }

    pub fn approval_denied(request: &str, by: &str, note: Option<&str>) -> Self {
        let e = Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("denied by {by} (approval request {request})"),
        );
        match note {
            Some(note) => e.with_detail(note),
            None => e,
        }
    }

    pub fn approval_timed_out(request: &str, timeout: Duration) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("approval timed out: nobody decided approval request {request}"),
        )
        .with_detail(format!(
            "requests expire after {}",
            humantime::format_duration(timeout)
        ))
    }

    /// Fail closed: the statement does not run.
    pub fn approval_unavailable(why: impl Into<String>) -> Self {
        Self::error(
            code::INSUFFICIENT_PRIVILEGE,
            "approval required, but the approval could not be processed; the statement did not run",
        )
        .with_detail(why)
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::Severity;
    use super::*;

    /// Every error in the catalogue: its SQLSTATE, severity and the start
    /// of its message, as a client sees them. A new error gets a row; a
    /// changed SQLSTATE breaks clients that match on it, so it shows here.
    #[rustfmt::skip]
    fn catalogue() -> Vec<(PgError, &'static str, Severity, &'static str)> {
        use Severity::{Error as E, Fatal as F};
        let none: &[String] = &[];
        let oncall = &["oncall".to_owned()];
        vec![
            (PgError::protocol_violation("bad"), "08P01", F, "bad"),
            (PgError::encode_failed("x"), "XX000", F, "cannot encode"),
            (PgError::unsupported_protocol(2, 0), "0A000", F, "unsupported frontend protocol 2.0"),
            (PgError::zero_byte_in_statement(), "08P01", E, "invalid message format"),
            (PgError::invalid_utf8_statement(), "22021", E, "invalid byte sequence"),
            (PgError::sent_too_much_while_waiting(), "54000", F, "too much sent"),
            (PgError::not_running_until_sync(), "25P02", E, "infraveil refused this message"),
            (PgError::too_many_names(64), "54000", E, "infraveil keeps at most 64"),
            (PgError::function_call_unsupported(), "0A000", E, "the FunctionCall"),
            (PgError::statement_missing(""), "26000", E, "unnamed prepared statement does not exist"),
            (PgError::statement_missing("s1"), "26000", E, "prepared statement \"s1\" does not exist"),
            (PgError::portal_missing("p"), "34000", E, "portal \"p\" does not exist"),
            (PgError::client_too_slow(), "08006", F, "client did not read"),
            (PgError::upstream_invalid_message(), "08006", F, "infraveil received an invalid"),
            (PgError::lost_track_of_statements(), "08P01", F, "infraveil lost track"),
            (PgError::unsafe_setting("d"), "08P01", F, "infraveil ended the session"),
            (PgError::auth_failed("al"), "28P01", F, "password authentication failed for user \"al\""),
            (PgError::too_many_clients(), "53300", F, "sorry, too many clients"),
            (PgError::too_many_logging_in(), "53300", F, "too many clients are logging in"),
            (PgError::tls_required(), "28000", F, "connection requires TLS"),
            (PgError::no_user_name(), "28000", F, "no PostgreSQL user name"),
            (PgError::grant_not_valid("g1", "expired"), "28000", F, "grant g1 is no longer valid"),
            (PgError::role_not_in_policy("r"), "28000", F, "role \"r\" of this credential"),
            (PgError::no_such_database("database \"x\" does not exist"), "3D000", F, "database \"x\""),
            (PgError::upstream_unreachable("refused"), "08001", F, "infraveil could not connect"),
            (PgError::upstream_catalog_unreadable(), "08001", F, "infraveil could not read"),
            (PgError::startup_parameter_refused("no"), "0A000", F, "no"),
            (PgError::shutting_down(), "57P01", F, "terminating connection due to administrator"),
            (PgError::grant_expired("g1", "now"), "57P01", F, "terminating connection: grant g1 expired"),
            (PgError::grant_revoked("g1", "ops"), "57P01", F, "terminating connection: grant g1 was revoked by ops"),
            (PgError::credential_gone("c"), "57P01", F, "terminating connection: credential c"),
            (PgError::audit_write_failed("disk"), "58030", F, "disk"),
            (PgError::audit_unhealthy(), "58030", E, "infraveil refuses statements"),
            (PgError::audit_waiting(), "58030", E, "infraveil refuses write statements"),
            (PgError::control_unavailable("down"), "57P03", F, "infraveil cannot reach its control database"),
            (PgError::denied_by_rule("r", "why"), "42501", E, "statement denied by infraveil rule r"),
            (PgError::denied("ddl", "r", "why", None), "42501", E, "infraveil denied this ddl statement"),
            (PgError::held_without_approvals("destructive", "r", "why", oncall), "42501", E, "approval required"),
            (PgError::execute_not_prepared(), "42501", E, "infraveil does not prepare EXECUTE"),
            (PgError::fetch_refused("c", "is not allowed"), "42501", E, "FETCH of portal \"c\""),
            (PgError::refused_when_prepared(), "42501", E, "infraveil refused this statement"),
            (PgError::portal_not_run_through_protocol("p"), "42501", E, "infraveil does not run portal"),
            (PgError::portal_bound_without_approval(), "42501", E, "this portal was bound"),
            (PgError::approval_spent(), "42501", E, "an approved statement runs once"),
            (PgError::approval_cancelled("a1"), "57014", E, "canceling statement due to user request"),
            (PgError::approval_deferred("write", "a1", "http://x", ("why", "r"), none), "42501", E, "approval required: infraveil holds"),
            (PgError::approval_denied("a1", "bob", Some("no")), "42501", E, "denied by bob"),
            (PgError::approval_timed_out("a1", Duration::from_secs(60)), "42501", E, "approval timed out"),
            (PgError::approval_unavailable("down"), "42501", E, "approval required, but"),
        ]
    }

    #[test]
    fn every_error_has_its_sqlstate_and_severity() {
        let table = catalogue();
        for (e, sqlstate, severity, starts) in &table {
            assert_eq!(e.code, *sqlstate, "{e}");
            assert_eq!(e.severity, *severity, "{e}");
            assert!(e.message.starts_with(starts), "{e} should start {starts:?}");
            // Every SQLSTATE is five characters of PostgreSQL's alphabet.
            assert!(
                e.code.len() == 5
                    && e.code
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{e}"
            );
            // And each encodes as one well-formed ErrorResponse.
            let fields = super::super::ErrorFields::decode(&e.to_bytes()).expect("decodes");
            assert_eq!(fields.code(), Some(*sqlstate));
        }
        // Errors end sessions only where PostgreSQL's would: FATAL is for
        // login, the wire, and sessions the firewall ends.
        let fatal = table.iter().filter(|t| t.2 == Severity::Fatal).count();
        assert_eq!(fatal, 25);
    }
}
