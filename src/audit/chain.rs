//! The record format and its checks, with no I/O: what `veilctl audit
//! verify`, the daemon and any outside verifier agree on.
//!
//! A record is `{seq, prev, payload, hash, sig?}`: `payload` is the exact
//! JSON text of the event, `hash` is hex SHA-256 of the 32 `prev` bytes
//! followed by the UTF-8 payload bytes (the first record's `prev` is 64
//! zeros), and `sig`, on the last record of each written batch and on
//! every checkpoint, is the hex Ed25519 signature of the 32 `hash` bytes.
//! Each hash covers every record before it, so one signature vouches for
//! the whole chain up to its record; records after the last signature were
//! not written by the firewall (it stores each batch atomically with its
//! signed last record), and a full chain that ends in them fails.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// One record of the log, as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub prev: String,
    pub payload: String,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

pub fn hash(prev: &[u8; 32], payload: &str) -> [u8; 32] {
    hash_bytes(prev, payload.as_bytes())
}

pub fn hash_bytes(prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(payload);
    h.finalize().into()
}

/// Hex signature of a record's hash bytes.
pub fn sign(key: &SigningKey, digest: &[u8; 32]) -> String {
    hex::encode(sign_bytes(key, digest))
}

/// The signature of a record's hash bytes.
pub fn sign_bytes(key: &SigningKey, digest: &[u8; 32]) -> [u8; 64] {
    key.sign(digest).to_bytes()
}

/// Hash a payload as record `seq` after `prev`, and sign it if `key`.
pub fn seal(
    seq: u64,
    prev: &[u8; 32],
    payload: String,
    key: Option<&SigningKey>,
) -> (Record, [u8; 32]) {
    let digest = hash(prev, &payload);
    (
        Record {
            seq,
            prev: hex::encode(prev),
            payload,
            hash: hex::encode(digest),
            sig: key.map(|k| sign(k, &digest)),
        },
        digest,
    )
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Records are missing before this one.
    Gap,
    /// This record is out of order (a duplicate, or swapped).
    Order,
    /// `prev` is not the previous record's hash.
    Link,
    /// `hash` does not match `prev` and `payload`: the payload was edited.
    Hash,
    /// The signature is not the firewall's over `hash`.
    Signature,
    /// The payload is not the JSON event this record should hold.
    Payload,
    /// The chain is shorter than a checkpoint kept elsewhere says.
    Truncated,
    /// A field is not well-formed (not hex, wrong length).
    Malformed,
    /// The chain ends in records no signature vouches for.
    Unsigned,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Gap => "gap",
            Fault::Order => "order",
            Fault::Link => "link",
            Fault::Hash => "hash",
            Fault::Signature => "signature",
            Fault::Payload => "payload",
            Fault::Truncated => "truncated",
            Fault::Malformed => "malformed",
            Fault::Unsigned => "unsigned",
        }
    }
}

/// The first bad record and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("record {seq}: {} ({detail})", fault.as_str())]
pub struct Problem {
    pub seq: u64,
    pub fault: Fault,
    pub detail: String,
}

/// A good chain's extent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: u64,
    /// Records carrying a signature.
    pub signatures: u64,
    /// Records no signature in this input vouches for: only in a filtered
    /// export (`allow_gaps`), where the records that would link them to a
    /// signature are left out. Verify the whole log to vouch for them.
    pub unvouched: u64,
    pub first_seq: Option<u64>,
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
}

/// Checks records one at a time, in order, without holding them.
pub struct ChainVerifier {
    key: VerifyingKey,
    /// Filtered exports have gaps by design: then each record is checked on
    /// its own (hash over its own `prev`, signature) but not linked.
    allow_gaps: bool,
    next: Option<(u64, [u8; 32])>,
    /// A checkpoint kept elsewhere: record `seq` must exist with this hash.
    expect: Option<(u64, String)>,
    expect_met: bool,
    /// A gap seen at the last record, reported once the next record says
    /// whether records are missing or only out of order.
    gap: Option<(u64, Problem)>,
    /// The first record since the last signature, and how many since.
    unsigned: Option<(u64, u64)>,
    summary: Summary,
}

impl ChainVerifier {
    /// Verify a chain from its start (seq 1 after [`GENESIS`]).
    pub fn from_genesis(key: VerifyingKey) -> ChainVerifier {
        Self::new(key, Some((1, GENESIS)), false)
    }

    /// Verify a piece of a chain (an export from `--since`): the first
    /// record is taken as it is, the rest must link to it.
    pub fn from_anywhere(key: VerifyingKey, allow_gaps: bool) -> ChainVerifier {
        Self::new(key, None, allow_gaps)
    }

    fn new(key: VerifyingKey, next: Option<(u64, [u8; 32])>, allow_gaps: bool) -> ChainVerifier {
        ChainVerifier {
            key,
            allow_gaps,
            next,
            expect: None,
            expect_met: false,
            gap: None,
            unsigned: None,
            summary: Summary {
                records: 0,
                signatures: 0,
                unvouched: 0,
                first_seq: None,
                head_seq: None,
                head_hash: None,
            },
        }
    }

    /// Also require the record a checkpoint names (`seq`, hex `hash`): a log
    /// cut short before it, or different at it, fails.
    pub fn expect_head(mut self, seq: u64, hash: &str) -> ChainVerifier {
        self.expect = Some((seq, hash.to_ascii_lowercase()));
        self
    }

    pub fn check(&mut self, r: &Record) -> Result<(), Problem> {
        let problem = |fault, detail: String| Problem {
            seq: r.seq,
            fault,
            detail,
        };
        if let Some((missing, gap)) = self.gap.take() {
            if r.seq == missing {
                return Err(Problem {
                    seq: gap.seq,
                    fault: Fault::Order,
                    detail: format!("record {} comes before record {missing}", gap.seq),
                });
            }
            return Err(gap);
        }
        let prev = decode32(&r.prev)
            .ok_or_else(|| problem(Fault::Malformed, "prev is not 32 hex bytes".into()))?;
        let mut gap = None;
        if let Some((seq, expected_prev)) = self.next {
            if r.seq > seq && !self.allow_gaps {
                gap = Some((
                    seq,
                    problem(
                        Fault::Gap,
                        format!("expected record {seq}; {} record(s) missing", r.seq - seq),
                    ),
                ));
            }
            if r.seq < seq {
                return Err(problem(
                    Fault::Order,
                    format!(
                        "expected record {seq}, found {} again or out of order",
                        r.seq
                    ),
                ));
            }
            if r.seq == seq && prev != expected_prev {
                return Err(problem(
                    Fault::Link,
                    "prev is not the hash of the record before it".into(),
                ));
            }
        }
        let digest = hash(&prev, &r.payload);
        if hex::encode(digest) != r.hash {
            return Err(problem(
                Fault::Hash,
                "hash does not match prev and payload: the payload was changed".into(),
            ));
        }
        if let Some(sig) = &r.sig {
            let sig = hex::decode(sig)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .ok_or_else(|| problem(Fault::Malformed, "sig is not 64 hex bytes".into()))?;
            if self
                .key
                .verify(&digest, &Signature::from_bytes(&sig))
                .is_err()
            {
                return Err(problem(
                    Fault::Signature,
                    "not signed by this public key".into(),
                ));
            }
        }
        match serde_json::from_str::<serde_json::Value>(&r.payload) {
            Ok(v) if v.get("seq").and_then(|s| s.as_u64()) == Some(r.seq) => {}
            Ok(_) => {
                return Err(problem(
                    Fault::Payload,
                    "the payload's seq is not the record's".into(),
                ));
            }
            Err(e) => return Err(problem(Fault::Payload, format!("payload is not JSON: {e}"))),
        }
        if let Some((seq, hash)) = &self.expect
            && *seq == r.seq
        {
            if *hash != r.hash {
                return Err(problem(
                    Fault::Hash,
                    "differs from the checkpoint kept for this record".into(),
                ));
            }
            self.expect_met = true;
        }
        // A gap ends what a later signature can vouch for: the records
        // that would link them to it are missing.
        if gap.is_some() || (self.allow_gaps && self.next.is_some_and(|(s, _)| r.seq != s)) {
            self.close_unsigned();
        }
        if r.sig.is_some() {
            self.unsigned = None;
            self.summary.signatures += 1;
        } else {
            let (_, n) = self.unsigned.get_or_insert((r.seq, 0));
            *n += 1;
        }
        self.gap = gap;
        self.next = Some((r.seq + 1, digest));
        self.summary.records += 1;
        self.summary.first_seq.get_or_insert(r.seq);
        self.summary.head_seq = Some(r.seq);
        self.summary.head_hash = Some(r.hash.clone());
        Ok(())
    }

    /// Records since the last signature that nothing later can vouch for.
    fn close_unsigned(&mut self) {
        if let Some((_, n)) = self.unsigned.take() {
            self.summary.unvouched += n;
        }
    }

    /// Finish: the chain's extent, or why it falls short of the checkpoint
    /// or ends in records no signature vouches for.
    pub fn finish(mut self) -> Result<Summary, Problem> {
        if let Some((_, gap)) = self.gap {
            return Err(gap);
        }
        if let Some((first, n)) = self.unsigned {
            if !self.allow_gaps {
                let head = self.summary.head_seq.unwrap_or(first);
                return Err(Problem {
                    seq: first,
                    fault: Fault::Unsigned,
                    detail: format!(
                        "{n} record(s) from {first} to {head} come after the last signature: the firewall signs the last record of every batch it writes, so it did not write these"
                    ),
                });
            }
            self.close_unsigned();
        }
        if let Some((seq, _)) = &self.expect
            && !self.expect_met
        {
            let head = self.summary.head_seq.unwrap_or(0);
            return Err(Problem {
                seq: head,
                fault: Fault::Truncated,
                detail: format!(
                    "the log ends at record {head}, but the checkpoint names record {seq}: records were removed from the end"
                ),
            });
        }
        Ok(self.summary)
    }
}

fn decode32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

/// Parse `SEQ:HASH` as printed for checkpoints.
pub fn parse_head(s: &str) -> Option<(u64, String)> {
    let (seq, hash) = s.split_once(':')?;
    let seq = seq.trim().parse().ok()?;
    let hash = hash.trim().to_ascii_lowercase();
    decode32(&hash)?;
    Some((seq, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records in batches of `batch`, each batch's last one signed.
    fn batched(n: u64, batch: u64, key: &SigningKey) -> Vec<Record> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let payload = format!("{{\"seq\":{seq},\"type\":\"test\"}}");
                let signed = seq % batch == 0 || seq == n;
                let (r, h) = seal(seq, &prev, payload, signed.then_some(key));
                prev = h;
                r
            })
            .collect()
    }

    fn chain(n: u64, key: &SigningKey) -> Vec<Record> {
        batched(n, 1, key)
    }

    fn verify(records: &[Record], key: &SigningKey) -> Result<Summary, Problem> {
        let mut v = ChainVerifier::from_genesis(key.verifying_key());
        for r in records {
            v.check(r)?;
        }
        v.finish()
    }

    #[test]
    fn a_good_chain_verifies_and_each_kind_of_tampering_is_named() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let good = chain(5, &key);
        let s = verify(&good, &key).unwrap();
        assert_eq!((s.records, s.head_seq), (5, Some(5)));
        assert_eq!(good[0].prev, "0".repeat(64));

        let mut edited = good.clone();
        edited[2].payload = edited[2].payload.replace("test", "tset");
        assert_eq!(verify(&edited, &key).unwrap_err().fault, Fault::Hash);
        assert_eq!(verify(&edited, &key).unwrap_err().seq, 3);

        let mut dropped = good.clone();
        dropped.remove(2);
        assert_eq!(verify(&dropped, &key).unwrap_err().fault, Fault::Gap);

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        let p = verify(&swapped, &key).unwrap_err();
        assert_eq!((p.fault, p.seq), (Fault::Order, 3), "{p}");

        let mut last_dropped = good.clone();
        last_dropped.remove(3);
        assert_eq!(verify(&last_dropped, &key).unwrap_err().fault, Fault::Gap);

        let mut dup = good.clone();
        dup.insert(2, good[1].clone());
        assert_eq!(verify(&dup, &key).unwrap_err().fault, Fault::Order);

        let other = SigningKey::from_bytes(&[2; 32]);
        let resigned = chain(5, &other);
        assert_eq!(verify(&resigned, &key).unwrap_err().fault, Fault::Signature);

        // Truncation is invisible to the chain itself, not to a checkpoint.
        let head = (4, good[3].hash.clone());
        let mut v = ChainVerifier::from_genesis(key.verifying_key()).expect_head(head.0, &head.1);
        for r in &good[..3] {
            v.check(r).unwrap();
        }
        assert_eq!(v.finish().unwrap_err().fault, Fault::Truncated);
        let mut v = ChainVerifier::from_genesis(key.verifying_key()).expect_head(head.0, &head.1);
        for r in &good {
            v.check(r).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn one_signature_vouches_for_its_batch_and_an_unsigned_tail_fails() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let good = batched(10, 4, &key);
        let s = verify(&good, &key).unwrap();
        assert_eq!((s.records, s.signatures, s.unvouched), (10, 3, 0));

        // Forged records appended after the last signature.
        let mut appended = good.clone();
        let last = appended.last().unwrap().clone();
        let prev = decode32(&last.hash).unwrap();
        let (forged, _) = seal(11, &prev, "{\"seq\":11,\"type\":\"x\"}".into(), None);
        appended.push(forged);
        let p = verify(&appended, &key).unwrap_err();
        assert_eq!((p.fault, p.seq), (Fault::Unsigned, 11), "{p}");

        // A signature removed: the batch it closed is vouched for by nothing.
        let mut stripped = good.clone();
        stripped[9].sig = None;
        let p = verify(&stripped, &key).unwrap_err();
        assert_eq!((p.fault, p.seq), (Fault::Unsigned, 9), "{p}");

        // A forged record in the middle breaks the chain the next
        // signature covers.
        let mut forged = good.clone();
        forged[5].payload = forged[5].payload.replace("test", "tset");
        let p = verify(&forged, &key).unwrap_err();
        assert_eq!(p.fault, Fault::Hash);

        // A filtered export: kept records check on their own, and those no
        // signature in it vouches for are counted, not hidden.
        let kept: Vec<Record> = good
            .iter()
            .filter(|r| r.seq % 3 == 0 || r.seq == 8)
            .cloned()
            .collect();
        let mut v = ChainVerifier::from_anywhere(key.verifying_key(), true);
        for r in &kept {
            v.check(r).unwrap();
        }
        let s = v.finish().unwrap();
        assert_eq!((s.records, s.signatures, s.unvouched), (4, 1, 3), "{s:?}");
    }

    #[test]
    fn heads_parse() {
        let h = "ab".repeat(32);
        assert_eq!(parse_head(&format!("12:{h}")), Some((12, h.clone())));
        assert_eq!(parse_head("12"), None);
        assert_eq!(parse_head("x:ab"), None);
    }
}
