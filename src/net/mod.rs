//! Transport shared by both sides of the relay: a TCP stream that may be
//! upgraded to TLS ([`stream`]) and the rustls configurations for the
//! client-facing listener and the upstream login ([`tls`]).

pub mod stream;
pub mod tls;
