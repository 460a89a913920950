//! Helpers over pgwire's message codec: frame reading with size limits, the
//! catalogue of client-facing errors ([`errors`]), and the startup-phase
//! packets.
//!
//! The relay works on whole *frames* (tag byte + length + body) so that rows and
//! COPY data are forwarded as the exact bytes PostgreSQL sent. Messages the
//! firewall itself sends or must understand are encoded and decoded with
//! pgwire's codec; the one exception is the statement text of `Query` and
//! `Parse`, read from the raw bytes because pgwire decodes it lossily and the
//! firewall must inspect exactly what PostgreSQL will receive.

pub mod error;
pub mod errors;
pub mod frame;
pub mod sqlstate;
pub mod startup;

use bytes::BytesMut;
use pgwire::messages::Message;

pub use error::{ErrorFields, PgError};
pub use frame::{Frame, FrameReader};

/// Append `msg`, encoded by pgwire, to `out`. Encoding fails only for a
/// message over pgwire's size limits, which the firewall's own never reach.
pub fn put<M: Message>(out: &mut BytesMut, msg: &M) -> Result<(), PgError> {
    msg.encode(out).map_err(PgError::encode_failed)
}
