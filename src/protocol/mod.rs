//! Helpers over pgwire's message codec: frame reading with size limits, the one
//! place client-facing errors are built, and the startup-phase packets.
//!
//! The relay works on whole *frames* (tag byte + length + body) so that rows and
//! COPY data are forwarded as the exact bytes PostgreSQL sent. Only the messages
//! the firewall must understand (`Query`, `Parse`, `ErrorResponse`,
//! `ReadyForQuery`, startup and authentication) are decoded, and those are
//! decoded with pgwire's codec.

pub mod error;
pub mod frame;
pub mod sqlstate;
pub mod startup;

pub use error::PgError;
pub use frame::{Frame, FrameReader};
