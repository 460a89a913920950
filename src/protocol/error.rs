//! Client-facing PostgreSQL errors: the [`PgError`] type and its encoding,
//! and the fields of errors PostgreSQL sends. The errors themselves are
//! named in [`super::errors`].

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::ErrorResponse;

use super::sqlstate;

/// Severity of an error sent to the client. `Fatal` ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    /// Only the catalogue ([`super::errors`]) makes errors from scratch, so
    /// each one's wording and SQLSTATE is written once.
    pub(super) fn error(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub(super) fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Append the `ErrorResponse` for this error to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let sev = self.severity.as_str().to_owned();
        let mut fields = vec![
            (b'S', sev.clone()),
            (b'V', sev),
            (b'C', self.code.to_owned()),
            (b'M', self.message.clone()),
        ];
        if let Some(d) = &self.detail {
            fields.push((b'D', d.clone()));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        // Encoding an ErrorResponse can only fail on an absurd length, which our
        // own messages never reach; fall back to a minimal error rather than panic.
        if ErrorResponse::new(fields).encode(buf).is_err() {
            let _ = ErrorResponse::new(vec![
                (b'S', "ERROR".into()),
                (b'C', sqlstate::INTERNAL_ERROR.into()),
                (b'M', "error message too long".into()),
            ])
            .encode(buf);
        }
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

/// The fields of an `ErrorResponse` frame, decoded with pgwire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields(pub Vec<(u8, String)>);

impl ErrorFields {
    /// Decode a whole `ErrorResponse` frame; `None` if it is malformed.
    pub fn decode(frame: &[u8]) -> Option<ErrorFields> {
        let mut buf = BytesMut::from(frame);
        // pgwire's ErrorResponse decoder reads field codes without bounds
        // checks; the upstream is trusted, but a panic must never take the
        // session's task down, so guard it.
        std::panic::catch_unwind(move || {
            ErrorResponse::decode(&mut buf, &Default::default())
                .ok()
                .flatten()
                .map(|e| ErrorFields(e.fields))
        })
        .ok()
        .flatten()
    }

    pub fn get(&self, field: u8) -> Option<&str> {
        self.0.iter().find(|f| f.0 == field).map(|f| f.1.as_str())
    }

    /// The SQLSTATE (`C` field).
    pub fn code(&self) -> Option<&str> {
        self.get(b'C')
    }

    /// The primary message (`M` field).
    pub fn message(&self) -> Option<&str> {
        self.get(b'M')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_error_fields() {
        let e = PgError::error(sqlstate::INSUFFICIENT_PRIVILEGE, "denied by rule x")
            .with_detail("because")
            .with_hint("ask for a grant");
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        let fields = ErrorFields::decode(&bytes).unwrap();
        assert_eq!(fields.code(), Some("42501"));
        assert_eq!(fields.message(), Some("denied by rule x"));
        assert_eq!(fields.get(b'D'), Some("because"));
        assert_eq!(fields.get(b'H'), Some("ask for a grant"));
    }

    #[test]
    fn malformed_error_response_does_not_panic() {
        assert!(ErrorFields::decode(&[b'E', 0, 0, 0, 6, b'C']).is_none());
        assert!(ErrorFields::decode(&[b'E', 0, 0, 0, 4]).is_none());
    }
}
