//! Link tokens for approval pages: unguessable (128 random bits), signed
//! (HMAC-SHA256 with a key kept in the store, over the request id, the nonce
//! and the expiry), single-use (a request is decided once; the page refuses
//! a decided one) and expiring with the request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

pub struct Links {
    key: hmac::Key,
}

impl Links {
    pub fn new(key: &[u8; 32]) -> Links {
        Links {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A fresh nonce for a new request.
    pub fn nonce() -> String {
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
    }

    fn message(id: &str, nonce: &str, expires_at: u64) -> String {
        format!("approval-link\0{id}\0{nonce}\0{expires_at}")
    }

    /// The token for a request: `nonce.signature`.
    pub fn token(&self, id: &str, nonce: &str, expires_at: u64) -> String {
        let tag = hmac::sign(&self.key, Self::message(id, nonce, expires_at).as_bytes());
        format!("{nonce}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `token` was issued for this request (constant time).
    pub fn verify(&self, id: &str, nonce: &str, expires_at: u64, token: &str) -> bool {
        let Some((given_nonce, sig)) = token.split_once('.') else {
            return false;
        };
        let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        // The signature covers the stored nonce: a token for another
        // request, or with a swapped nonce, fails here.
        let ok = hmac::verify(
            &self.key,
            Self::message(id, given_nonce, expires_at).as_bytes(),
            &sig,
        )
        .is_ok();
        ok && subtle::ConstantTimeEq::ct_eq(given_nonce.as_bytes(), nonce.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_request() {
        let links = Links::new(&[7; 32]);
        let nonce = Links::nonce();
        let t = links.token("a-1", &nonce, 100);
        assert!(links.verify("a-1", &nonce, 100, &t));
        assert!(!links.verify("a-2", &nonce, 100, &t), "other request");
        assert!(!links.verify("a-1", &nonce, 101, &t), "other expiry");
        assert!(
            !links.verify("a-1", &Links::nonce(), 100, &t),
            "other nonce"
        );
        let other_key = Links::new(&[8; 32]).token("a-1", &nonce, 100);
        assert!(!links.verify("a-1", &nonce, 100, &other_key), "forged");
        let mut tampered = t.clone();
        tampered.push('A');
        assert!(!links.verify("a-1", &nonce, 100, &tampered));
        assert!(!links.verify("a-1", &nonce, 100, ""));
        assert!(!links.verify("a-1", &nonce, 100, "no-dot"));
    }
}
