//! The untagged packets a client may send first: `SSLRequest`,
//! `GSSENCRequest`, `CancelRequest` and `StartupMessage`.

use std::collections::BTreeMap;

use bytes::BytesMut;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{GssEncRequest, SslRequest, Startup};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

use super::PgError;

/// PostgreSQL's own limit on a startup packet.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// What the first packet of a connection asks for.
#[derive(Debug)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, key: i32 },
    Startup(StartupParams),
}

/// A decoded `StartupMessage`.
#[derive(Debug, Clone)]
pub struct StartupParams {
    pub minor_version: u16,
    pub params: BTreeMap<String, String>,
}

impl StartupParams {
    pub fn user(&self) -> Option<&str> {
        self.params
            .get("user")
            .map(String::as_str)
            .filter(|u| !u.is_empty())
    }

    pub fn database(&self) -> Option<&str> {
        self.params
            .get("database")
            .map(String::as_str)
            .filter(|d| !d.is_empty())
    }
}

/// Decode one startup-phase packet (length prefix included).
pub fn parse_startup_packet(packet: BytesMut) -> Result<StartupPacket, PgError> {
    if packet.len() < 8 {
        return Err(PgError::protocol_violation(
            "invalid length of startup packet",
        ));
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let bad = |what: &str| PgError::protocol_violation(format!("invalid {what} packet"));
    if SslRequest::is_ssl_request_packet(&packet) {
        return if packet.len() == 8 {
            Ok(StartupPacket::SslRequest)
        } else {
            Err(bad("SSLRequest"))
        };
    }
    if GssEncRequest::is_gss_enc_request_packet(&packet) {
        return if packet.len() == 8 {
            Ok(StartupPacket::GssEncRequest)
        } else {
            Err(bad("GSSENCRequest"))
        };
    }
    if CancelRequest::is_cancel_request_packet(&packet) {
        // Protocol 3.0 keys are exactly 4 bytes; that is all we ever issue.
        if packet.len() != 16 {
            return Err(bad("CancelRequest"));
        }
        let mut buf = packet;
        return match CancelRequest::decode(&mut buf, &ctx) {
            Ok(Some(c)) => match c.secret_key.as_i32() {
                Some(key) => Ok(StartupPacket::Cancel { pid: c.pid, key }),
                None => Err(bad("CancelRequest")),
            },
            _ => Err(bad("CancelRequest")),
        };
    }
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    if major != 3 {
        return Err(PgError::unsupported_protocol(major, minor));
    }
    // A startup packet must end with the terminating empty name.
    if packet.last() != Some(&0) {
        return Err(bad("startup"));
    }
    let mut buf = packet;
    match Startup::decode(&mut buf, &ctx) {
        Ok(Some(s)) => Ok(StartupPacket::Startup(StartupParams {
            minor_version: s.protocol_number_minor,
            params: s.parameters,
        })),
        _ => Err(bad("startup")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sqlstate;
    use bytes::BufMut;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + body.len() as i32);
        b.put_i32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn recognises_each_kind() {
        assert!(matches!(
            parse_startup_packet(packet(80877103, b"")),
            Ok(StartupPacket::SslRequest)
        ));
        assert!(matches!(
            parse_startup_packet(packet(80877104, b"")),
            Ok(StartupPacket::GssEncRequest)
        ));
        assert!(matches!(
            parse_startup_packet(packet(80877102, &[0, 0, 0, 7, 0, 0, 0, 9])),
            Ok(StartupPacket::Cancel { pid: 7, key: 9 })
        ));
        match parse_startup_packet(packet(196608, b"user\0bob\0database\0db\0\0")) {
            Ok(StartupPacket::Startup(p)) => {
                assert_eq!(p.user(), Some("bob"));
                assert_eq!(p.database(), Some("db"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_versions_and_garbage() {
        let e = parse_startup_packet(packet(2 << 16, b"user\0x\0\0")).unwrap_err();
        assert_eq!(e.code, sqlstate::FEATURE_NOT_SUPPORTED);
        let e = parse_startup_packet(packet(196608, b"user\0x")).unwrap_err();
        assert_eq!(e.code, sqlstate::PROTOCOL_VIOLATION);
        let e = parse_startup_packet(packet(80877102, &[0, 0, 0, 7])).unwrap_err();
        assert_eq!(e.code, sqlstate::PROTOCOL_VIOLATION);
        let e = parse_startup_packet(packet(80877103, b"x")).unwrap_err();
        assert_eq!(e.code, sqlstate::PROTOCOL_VIOLATION);
    }
}
