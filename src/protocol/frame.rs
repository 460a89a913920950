//! Reading whole protocol frames from a byte stream, with a size limit.
//!
//! A frame is one regular protocol message: a tag byte, a big-endian `i32`
//! length that counts itself, and the body. [`FrameReader`] keeps unread bytes
//! in its own buffer, so [`FrameReader::next`] is cancel-safe and can sit in a
//! `tokio::select!` next to the other direction of the relay.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::PgError;

/// Bytes read from the socket at a time when no larger frame is pending.
const READ_CHUNK: usize = 16 * 1024;

/// One complete protocol message, tag and length included.
#[derive(Debug)]
pub struct Frame {
    pub bytes: BytesMut,
}

impl Frame {
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The message body after tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of a message")]
    UnexpectedEof,
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

impl FrameError {
    /// The FATAL error a client gets when its own bytes were the problem.
    pub fn to_client_error(&self) -> PgError {
        match self {
            FrameError::TooLarge { len, max } => PgError::protocol_violation(format!(
                "message of {len} bytes exceeds the firewall's limit of {max} bytes"
            ))
            .with_hint("raise limits.max_message_bytes if such messages are legitimate"),
            other => PgError::protocol_violation(format!("invalid frontend message: {other}")),
        }
    }
}

/// Buffered reader of frames from `R`.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_len,
        }
    }

    /// Start from bytes already read from the socket (e.g. during startup).
    pub fn with_buffer(inner: R, buf: BytesMut, max_len: usize) -> Self {
        FrameReader {
            inner,
            buf,
            max_len,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A complete frame from the buffer, without reading from the socket.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(FrameError::BadLength(len as i64));
        }
        let len = len as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        let total = len + 1;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        Ok(Some(Frame {
            bytes: self.buf.split_to(total),
        }))
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.try_frame()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::UnexpectedEof)
                };
            }
        }
    }

    /// Read more bytes; `false` at end of stream.
    pub async fn fill(&mut self) -> Result<bool, FrameError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.inner.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    /// The next untagged startup-phase packet (length + body), at most
    /// `max_len` bytes. `Ok(None)` if the peer closed before sending anything.
    pub async fn next_startup_packet(
        &mut self,
        max_len: usize,
    ) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if self.buf.len() >= 4 {
                let len = (&self.buf[..4]).get_i32();
                // 8 bytes is the smallest real startup packet (length + code).
                if len < 8 {
                    return Err(FrameError::BadLength(len as i64));
                }
                let len = len as usize;
                if len > max_len {
                    return Err(FrameError::TooLarge { len, max: max_len });
                }
                if self.buf.len() >= len {
                    return Ok(Some(self.buf.split_to(len)));
                }
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::UnexpectedEof)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames_of(bytes: &[u8], max: usize) -> Vec<Result<Option<u8>, String>> {
        let mut r = FrameReader::new(bytes, max);
        let mut out = vec![];
        loop {
            match r.next().await {
                Ok(Some(f)) => out.push(Ok(Some(f.tag()))),
                Ok(None) => {
                    out.push(Ok(None));
                    break;
                }
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn reads_frames_and_clean_eof() {
        let bytes = [b'Q', 0, 0, 0, 5, 0, b'S', 0, 0, 0, 4];
        assert_eq!(
            frames_of(&bytes, 100).await,
            vec![Ok(Some(b'Q')), Ok(Some(b'S')), Ok(None)]
        );
    }

    #[tokio::test]
    async fn rejects_bad_and_oversized_lengths() {
        let r = frames_of(&[b'Q', 0, 0, 0, 3], 100).await;
        assert!(matches!(&r[0], Err(e) if e.contains("invalid message length 3")));
        let r = frames_of(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100).await;
        assert!(matches!(&r[0], Err(e) if e.contains("invalid message length -1")));
        let r = frames_of(&[b'Q', 0, 0, 1, 0], 100).await;
        assert!(matches!(&r[0], Err(e) if e.contains("exceeds the limit")));
    }

    #[tokio::test]
    async fn truncated_frame_is_unexpected_eof() {
        let r = frames_of(&[b'Q', 0, 0, 0, 10, b'x'], 100).await;
        assert!(matches!(&r[0], Err(e) if e.contains("middle of a message")));
    }
}
