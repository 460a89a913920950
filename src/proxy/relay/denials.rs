//! Refused statements, sent upstream as marked failures.
//!
//! [`Denials`] writes the message that stands in for a refused `Query`,
//! `Parse`, `Bind` or `Execute` (one that fails in PostgreSQL with a
//! per-session marker in its error), and on the way back recognises
//! PostgreSQL's error for it, so the client gets the firewall's own error
//! exactly where PostgreSQL answered. See [`super`] for why a refusal is a
//! replacement and not a dropped message.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;
use pgwire::messages::extendedquery::{Bind, Execute, Parse};
use pgwire::messages::simplequery::Query;

use super::RelayEnd;
use crate::protocol::{self, ErrorFields, Frame, PgError, sqlstate};

/// Pending denials kept at most; older ones can no longer be answered.
const MAX_PENDING_DENIALS: usize = 1024;

/// Refused statements sent upstream as marked failures, whose error has not
/// come back yet.
pub(super) struct Denials {
    /// Random per session, so a client cannot forge one to make its own
    /// error look like something else.
    marker: String,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    queue: VecDeque<(u64, PgError)>,
}

/// Which message a refused statement came in, so its replacement has the
/// same shape.
pub(super) enum Carrier<'a> {
    Query,
    Parse {
        name: Cow<'a, str>,
    },
    /// A refused `Bind`.
    Bind {
        portal: Cow<'a, str>,
    },
    /// A refused `Execute`.
    Execute,
}

impl Denials {
    pub(super) fn new() -> Denials {
        Denials {
            marker: format!("infraveil_denied_{:016x}", rand::random::<u64>()),
            pending: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue upstream a statement that fails to parse in place of a refused
    /// one, and remember `err` for when its error comes back. The
    /// replacement is a lone identifier, which PostgreSQL's syntax error
    /// quotes back.
    pub(super) fn refuse(
        &self,
        out: &mut BytesMut,
        carrier: Carrier<'_>,
        err: PgError,
    ) -> Result<(), RelayEnd> {
        let id = {
            let mut p = self.lock();
            p.next += 1;
            let id = p.next;
            if p.queue.len() >= MAX_PENDING_DENIALS {
                p.queue.pop_front();
            }
            p.queue.push_back((id, err));
            id
        };
        let text = format!("{}_{id}", self.marker);
        let put = match carrier {
            Carrier::Query => protocol::put(out, &Query::new(text)),
            // Same statement name: PostgreSQL's handling of the unnamed
            // statement depends on it.
            Carrier::Parse { name } => {
                let name = (!name.is_empty()).then(|| name.into_owned());
                protocol::put(out, &Parse::new(name, text, vec![]))
            }
            // A Bind of a statement that does not exist fails with the
            // marker in the message, like the replacements above.
            Carrier::Bind { portal } => {
                let portal = (!portal.is_empty()).then(|| portal.into_owned());
                protocol::put(out, &Bind::new(portal, Some(text), vec![], vec![], vec![]))
            }
            // So does an Execute of a portal that does not exist.
            Carrier::Execute => protocol::put(out, &Execute::new(Some(text), 0)),
        };
        put.map_err(RelayEnd::Fatal)
    }

    /// If `frame` is the upstream's error for one of our replacements, the
    /// firewall's error to send instead.
    pub(super) fn take_for(&self, frame: &Frame) -> Option<PgError> {
        let mut p = self.lock();
        if p.queue.is_empty() {
            return None;
        }
        let fields = ErrorFields::decode(&frame.bytes)?;
        let code = fields.code()?;
        if code != sqlstate::SYNTAX_ERROR
            && code != sqlstate::INVALID_SQL_STATEMENT_NAME
            && code != sqlstate::INVALID_CURSOR_NAME
        {
            return None;
        }
        let msg = fields.message()?;
        // The message is upstream text and may carry anything after the
        // marker (a multibyte character included): no byte-offset slicing.
        let at = msg.find(&self.marker)?;
        let digits = msg[at..]
            .strip_prefix(self.marker.as_str())?
            .strip_prefix('_')?;
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let id: u64 = digits.get(..end)?.parse().ok()?;
        // Responses come in order: denials older than this one were skipped
        // by PostgreSQL (it was already in an error state) and never return.
        while p.queue.front().is_some_and(|(front, _)| *front < id) {
            p.queue.pop_front();
        }
        match p.queue.front() {
            Some((front, _)) if *front == id => p.queue.pop_front().map(|(_, e)| e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_errors_are_matched_in_order() {
        use pgwire::messages::{DecodeContext, Message};
        let denials = Denials::new();
        let mut out = BytesMut::new();
        denials
            .refuse(&mut out, Carrier::Query, PgError::portal_missing("first"))
            .unwrap();
        let name = Cow::Borrowed("s1");
        denials
            .refuse(
                &mut out,
                Carrier::Parse { name },
                PgError::portal_missing("second"),
            )
            .unwrap();
        // The replacements are well-formed messages carrying the marker.
        let ctx = DecodeContext::default();
        let q = Query::decode(&mut out, &ctx).unwrap().unwrap();
        assert_eq!(q.query, format!("{}_1", denials.marker));
        let p = Parse::decode(&mut out, &ctx).unwrap().unwrap();
        assert_eq!(
            (p.name.as_deref(), p.query),
            (Some("s1"), format!("{}_2", denials.marker))
        );

        // What PostgreSQL answers a marker it could not parse.
        let syntax_error = |message: String| {
            let mut bytes = BytesMut::new();
            pgwire::messages::response::ErrorResponse::new(vec![
                (b'S', "ERROR".into()),
                (b'C', sqlstate::SYNTAX_ERROR.into()),
                (b'M', message),
            ])
            .encode(&mut bytes)
            .unwrap();
            Frame { bytes }
        };
        let upstream_err = |id: u64| {
            syntax_error(format!(
                "syntax error at or near \"{}_{id}\"",
                denials.marker
            ))
        };
        // The first denial was skipped upstream; the second comes back.
        let e = denials.take_for(&upstream_err(2)).unwrap();
        assert_eq!(e.message, "portal \"second\" does not exist");
        assert!(denials.take_for(&upstream_err(1)).is_none());
        // Other syntax errors pass through.
        let other = syntax_error("syntax error at or near \"x\"".into());
        assert!(denials.take_for(&other).is_none());
        // Whatever follows the marker, no panic: multibyte characters where
        // the separator or the digits should be.
        for tail in ["€", "_€", "_1€", "", "_", "é1", "_\u{10348}"] {
            let frame = syntax_error(format!(
                "syntax error at or near \"{}{tail}\"",
                denials.marker
            ));
            let _ = denials.take_for(&frame);
        }
    }
}
