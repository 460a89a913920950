//! How the log lies in its sled tree: records in chunks, each chunk one
//! value keyed by the big-endian `seq` of its first record, so the tree's
//! order is the log's order and a batch costs a few sled writes, not one
//! per record. A written batch is one or more chunks stored atomically;
//! its last record carries the signature.
//!
//! A chunk is the byte `1` followed by records, each
//! `seq` (u64 BE) · `prev` (32) · `hash` (32) · payload length (u32 BE) ·
//! payload (UTF-8 JSON) · `1` and the 64-byte signature, or `0`.
//! A value that starts with `{` is one record as JSON (logs written before
//! chunks); both are read.

use super::chain::{self, Record};

const VERSION: u8 = 1;
/// A chunk is closed once it holds this many bytes. sled writes a leaf
/// node (up to 16 values) over a quarter of its 512 KiB segment as a
/// separate blob file, which profiles showed: chunks stay well under 8 KiB.
pub const CHUNK_BYTES: usize = 6 * 1024;
/// `seq`, `prev`, `hash`, payload length.
const HEADER: usize = 8 + 32 + 32 + 4;

/// Builds chunks as records are sealed, in place, without a second pass.
#[derive(Default)]
pub struct Chunks {
    done: Vec<(u64, Vec<u8>)>,
    open: Option<(u64, Vec<u8>)>,
    /// Where the record being written (or written last) starts.
    at: usize,
    records: usize,
}

impl Chunks {
    /// Start record `seq` after `prev`: returns the buffer to write its
    /// payload into; [`Chunks::end_record`] finishes it.
    pub fn begin_record(&mut self, seq: u64, prev: &[u8; 32]) -> &mut Vec<u8> {
        if self
            .open
            .as_ref()
            .is_some_and(|(_, b)| b.len() >= CHUNK_BYTES)
        {
            self.done.extend(self.open.take());
        }
        let (_, buf) = self.open.get_or_insert_with(|| {
            let mut b = Vec::with_capacity(CHUNK_BYTES + 512);
            b.push(VERSION);
            (seq, b)
        });
        self.at = buf.len();
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend_from_slice(prev);
        // Hash and length, filled in by `end_record`.
        buf.extend_from_slice(&[0; 36]);
        buf
    }

    /// Finish the record begun last: its payload is what was written since.
    /// Returns its hash.
    pub fn end_record(&mut self) -> [u8; 32] {
        self.close_record(None)
    }

    /// Finish the record begun last, with `hash` as given (laying out
    /// records sealed before) or computed.
    fn close_record(&mut self, hash: Option<[u8; 32]>) -> [u8; 32] {
        let Some((_, buf)) = &mut self.open else {
            return [0; 32];
        };
        let at = self.at;
        let payload = at + HEADER;
        let digest = hash.unwrap_or_else(|| {
            let mut prev = [0u8; 32];
            prev.copy_from_slice(&buf[at + 8..at + 40]);
            chain::hash_bytes(&prev, &buf[payload..])
        });
        let len = (buf.len() - payload) as u32;
        buf[at + 40..at + 72].copy_from_slice(&digest);
        buf[at + 72..at + 76].copy_from_slice(&len.to_be_bytes());
        buf.push(0);
        self.records += 1;
        digest
    }

    /// Sign the last record written.
    pub fn sign_last(&mut self, sig: &[u8; 64]) {
        if let Some((_, buf)) = &mut self.open
            && let Some(flag) = buf.last_mut()
        {
            *flag = 1;
            buf.extend_from_slice(sig);
        }
    }

    /// Records written.
    pub fn records(&self) -> usize {
        self.records
    }

    /// The chunks, each with its key (its first seq).
    pub fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
        self.done.extend(self.open.take());
        self.done
    }
}

/// Lay out records already sealed (moving records aside, tests that write
/// a log as someone with the disk would).
pub fn encode(records: &[Record]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut chunks = Chunks::default();
    for r in records {
        let prev = hex32(&r.prev).ok_or_else(|| format!("record {}: bad prev", r.seq))?;
        let hash = hex32(&r.hash).ok_or_else(|| format!("record {}: bad hash", r.seq))?;
        chunks
            .begin_record(r.seq, &prev)
            .extend_from_slice(r.payload.as_bytes());
        // The stored hash as it is, right or wrong: this lays out, it does
        // not vouch.
        chunks.close_record(Some(hash));
        if let Some(sig) = &r.sig {
            let sig: [u8; 64] = hex::decode(sig)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("record {}: bad sig", r.seq))?;
            chunks.sign_last(&sig);
        }
    }
    Ok(chunks.finish())
}

/// The records of one stored value.
pub fn decode(value: &[u8]) -> Result<Vec<Record>, String> {
    match value.first() {
        Some(b'{') => serde_json::from_slice(value)
            .map(|r| vec![r])
            .map_err(|e| e.to_string()),
        Some(&VERSION) => {
            let mut out = Vec::new();
            let mut rest = &value[1..];
            while !rest.is_empty() {
                let (r, tail) = record(rest).ok_or("a record is cut short or malformed")?;
                out.push(r);
                rest = tail;
            }
            Ok(out)
        }
        _ => Err("not an audit chunk".into()),
    }
}

fn record(b: &[u8]) -> Option<(Record, &[u8])> {
    let header = b.get(..HEADER)?;
    let seq = u64::from_be_bytes(header[..8].try_into().ok()?);
    let len = u32::from_be_bytes(header[72..76].try_into().ok()?) as usize;
    let end = HEADER.checked_add(len)?;
    let payload = std::str::from_utf8(b.get(HEADER..end)?).ok()?.to_owned();
    let (sig, rest) = match b.get(end)? {
        0 => (None, &b[end + 1..]),
        1 => (
            Some(hex::encode(b.get(end + 1..end + 65)?)),
            b.get(end + 65..)?,
        ),
        _ => return None,
    };
    Some((
        Record {
            seq,
            prev: hex::encode(&header[8..40]),
            payload,
            hash: hex::encode(&header[40..72]),
            sig,
        },
        rest,
    ))
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_layout_and_old_values_still_read() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut prev = chain::GENESIS;
        let mut records = Vec::new();
        // Enough to fill more than one chunk.
        for seq in 1..=300u64 {
            let payload = format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(200));
            let (r, h) = chain::seal(seq, &prev, payload, (seq % 7 == 0).then_some(&key));
            records.push(r);
            prev = h;
        }
        let chunks = encode(&records).unwrap();
        assert!(chunks.len() > 1, "{}", chunks.len());
        let mut back = Vec::new();
        let mut expected_key = 1;
        for (k, v) in &chunks {
            assert_eq!(*k, expected_key);
            let rs = decode(v).unwrap();
            expected_key = rs.last().unwrap().seq + 1;
            back.extend(rs);
        }
        assert_eq!(back, records);
        let old = serde_json::to_vec(&records[4]).unwrap();
        assert_eq!(decode(&old).unwrap(), vec![records[4].clone()]);
        // Cut short or garbage: an error, never a panic.
        let (_, v) = &chunks[0];
        for cut in [2, 50, 80, v.len() - 1] {
            assert!(decode(&v[..cut]).is_err(), "{cut}");
        }
        assert!(decode(b"\x07junk").is_err());
        assert!(decode(b"").is_err());
    }
}
