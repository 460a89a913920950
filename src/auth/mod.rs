//! Client authentication: SCRAM-SHA-256 against a [`CredentialSource`].
//!
//! The firewall never stores or sees a reusable secret: a credential is a SCRAM
//! verifier (salt, iterations, StoredKey, ServerKey). An identity may hold
//! several grants at once; the client's proof is checked against each, and
//! the session takes the role of the one that matched. Unknown identities,
//! wrong secrets and expired or revoked grants all fail the same way for the
//! client (FATAL 28P01); only the log says which.

use std::sync::Arc;

use base64::Engine;

use bytes::BytesMut;
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth, gen_salted_password};
use pgwire::messages::Message;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::DevCredential;
use crate::protocol::{FrameReader, PgError};

/// Iterations for verifiers we create (PostgreSQL's default).
pub const SCRAM_ITERATIONS: usize = 4096;

/// A SCRAM-SHA-256 verifier: everything needed to check a password, nothing
/// that lets anyone log in with it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Verifier {
    #[serde(with = "hex")]
    pub salt: Vec<u8>,
    pub iterations: usize,
    #[serde(with = "hex")]
    pub stored_key: Vec<u8>,
    #[serde(with = "hex")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn from_password_with_salt(password: &str, salt: &[u8], iterations: usize) -> Verifier {
        let salted = gen_salted_password(password, salt, iterations);
        match ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, iterations) {
            ScramSecret::Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            } => Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            },
            // verifier_from_salted_password only builds the Verifier variant.
            ScramSecret::SaltedPassword { .. } => unreachable!("pgwire returned a salted password"),
        }
    }
}

impl Verifier {
    /// Whether `password` is the secret behind this verifier (for approvers
    /// signing in on the approval page). Costs the PBKDF2 rounds; call it off
    /// the async workers.
    pub fn check_password(&self, password: &str) -> bool {
        let salted = gen_salted_password(password, &self.salt, self.iterations);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
        let client_key = ring::hmac::sign(&key, b"Client Key");
        let stored = ring::digest::digest(&ring::digest::SHA256, client_key.as_ref());
        stored.as_ref().ct_eq(&self.stored_key).into()
    }
}

/// A credential an identity can log in with, and the role it carries.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Stable id (a grant id, or `dev:<identity>`), for logs and audit.
    pub id: String,
    pub identity: String,
    pub role: String,
    pub verifier: Verifier,
    /// Whether this came from a grant (checked against policy at login) or
    /// from the development source in config.
    pub kind: CredentialKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Grant,
    Dev,
}

/// Whether a credential may be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialState {
    Active,
    /// Expired at this time (RFC 3339).
    Expired(String),
    /// Revoked by this person.
    Revoked {
        by: String,
    },
    /// No such credential (any more).
    Gone,
}

/// A credential offered for one login, with its current state: inactive
/// ones are checked too, so a failure can say "expired" in the log (never to
/// the client).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub credential: Credential,
    pub state: CredentialState,
}

/// Where credentials come from (grants, plus development secrets from
/// config).
///
/// SCRAM sends the salt before the client proves anything, so every
/// credential of one identity shares the salt [`CredentialSource::salt`]
/// returns, and an unknown identity gets a stable salt as well: the exchange
/// reveals neither which identities exist nor how many grants they hold.
pub trait CredentialSource: Send + Sync + 'static {
    /// The SCRAM salt for `identity` (known or not).
    fn salt(&self, identity: &str) -> Vec<u8>;
    /// The credentials to try for `identity`, newest first.
    fn candidates(&self, identity: &str) -> Vec<Candidate>;
    /// The current state of a credential, checked for live sessions.
    fn state(&self, credential_id: &str) -> CredentialState;
    /// Why a credential was issued (a grant's `--reason`), for approvers.
    fn reason(&self, _credential_id: &str) -> Option<String> {
        None
    }
    /// Catch up with credentials changed elsewhere (other instances on one
    /// control database) before a login; an error refuses the login.
    fn refresh(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Derives per-identity SCRAM salts from one secret key, so salts are stable
/// across restarts and identical for known and unknown identities.
#[derive(Clone)]
pub struct SaltKey(ring::hmac::Key);

impl SaltKey {
    pub fn new(key: &[u8; 32]) -> SaltKey {
        SaltKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    pub fn salt(&self, identity: &str) -> Vec<u8> {
        let tag = ring::hmac::sign(&self.0, format!("scram-salt\0{identity}").as_bytes());
        tag.as_ref()[..16].to_vec()
    }
}

/// Development credentials from config (`[[dev_credentials]]`): a standing
/// secret per identity, for tests and local work.
pub fn dev_credentials(
    entries: &[DevCredential],
    salts: &SaltKey,
) -> Result<Vec<Credential>, crate::config::ConfigError> {
    entries
        .iter()
        .map(|e| {
            let secret = e
                .secret
                .read(&format!("dev_credentials for {}", e.identity))?;
            Ok(Credential {
                id: format!("dev:{}", e.identity),
                identity: e.identity.clone(),
                role: e.role.clone(),
                verifier: Verifier::from_password_with_salt(
                    &secret,
                    &salts.salt(&e.identity),
                    SCRAM_ITERATIONS,
                ),
                kind: CredentialKind::Dev,
            })
        })
        .collect()
}

/// Why authentication did not succeed; all map to the same client error,
/// the log gets the real reason.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown identity, or no grant")]
    NoCredential,
    #[error("wrong password")]
    WrongPassword,
    #[error("grant {0} has expired")]
    Expired(String),
    #[error("grant {0} was revoked")]
    Revoked(String),
    #[error("malformed SCRAM exchange: {0}")]
    Protocol(String),
    #[error("client closed the connection during authentication")]
    Closed,
    #[error("I/O error during authentication: {0}")]
    Io(#[from] std::io::Error),
}

impl AuthError {
    pub fn to_client_error(&self, user: &str) -> PgError {
        match self {
            AuthError::Protocol(m) => {
                PgError::protocol_violation(format!("malformed SCRAM authentication message: {m}"))
            }
            _ => PgError::auth_failed(user),
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, msg: Authentication) -> Result<(), AuthError> {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf)
        .map_err(|e| AuthError::Protocol(e.to_string()))?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

async fn read_password_message<S: AsyncRead + Unpin>(
    reader: &mut FrameReader<S>,
) -> Result<PasswordMessageFamily, AuthError> {
    let frame = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(AuthError::Closed),
        Err(e) => return Err(AuthError::Protocol(e.to_string())),
    };
    if frame.tag() != b'p' {
        return Err(AuthError::Protocol(format!(
            "expected a password message, got message type {:?}",
            frame.tag() as char
        )));
    }
    Ok(PasswordMessageFamily::Raw(BytesMut::from(frame.body())))
}

/// Run SCRAM-SHA-256 with the client against every candidate credential of
/// `user`. On success the client has been sent `AuthenticationSASLFinal` (but
/// not yet `AuthenticationOk`, which follows once the upstream connection is
/// up).
///
/// pgwire runs the exchange and checks its structure (mechanism, channel
/// binding, nonce, proof length) against a placeholder verifier that carries
/// the identity's salt; since one proof must then be tested against several
/// StoredKeys, that last step (RFC 5802 §3) is done here, for every candidate
/// without stopping early.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut FrameReader<S>,
    source: &Arc<dyn CredentialSource>,
    user: &str,
) -> Result<Credential, AuthError> {
    let salt = source.salt(user);
    let candidates = source.candidates(user);
    let placeholder = ScramSecret::Verifier {
        salt: salt.clone(),
        iterations: SCRAM_ITERATIONS,
        stored_key: rand::random::<[u8; 32]>().to_vec(),
        server_key: rand::random::<[u8; 32]>().to_vec(),
    };

    send(
        reader.get_mut(),
        Authentication::SASL(vec!["SCRAM-SHA-256".to_owned()]),
    )
    .await?;

    let initial = read_password_message(reader)
        .await?
        .into_sasl_initial_response()
        .map_err(|e| AuthError::Protocol(e.to_string()))?;
    if initial.auth_method != "SCRAM-SHA-256" {
        return Err(AuthError::Protocol(format!(
            "unsupported SASL mechanism {:?}",
            initial.auth_method
        )));
    }
    let client_first = initial
        .data
        .ok_or_else(|| AuthError::Protocol("empty client-first message".into()))?;
    let (server_first, waiting) = ScramServerAuth::new()
        .on_client_first_message_with_secret(&client_first, placeholder)
        .map_err(|e| AuthError::Protocol(e.to_string()))?;
    send(
        reader.get_mut(),
        Authentication::SASLContinue(server_first.clone().into_bytes().into()),
    )
    .await?;

    let response = read_password_message(reader)
        .await?
        .into_sasl_response()
        .map_err(|e| AuthError::Protocol(e.to_string()))?;
    match waiting.on_client_final_message(&response.data) {
        // The placeholder's keys are random: a well-formed exchange always
        // ends here, and the real check follows.
        Err(pgwire::error::PgWireError::InvalidPassword(_)) => {}
        Ok(_) => return Err(AuthError::WrongPassword),
        Err(e) => return Err(AuthError::Protocol(e.to_string())),
    }
    let exchange = Exchange::new(&client_first, &server_first, &response.data)?;
    let matched = candidates
        .iter()
        .filter(|c| c.credential.verifier.salt == salt)
        .filter(|c| c.credential.verifier.iterations == SCRAM_ITERATIONS)
        // Collect (not `find`) so every candidate costs the same.
        .filter(|c| exchange.proves(&c.credential.verifier))
        .collect::<Vec<_>>();
    let chosen = matched
        .iter()
        .find(|c| c.state == CredentialState::Active)
        .or(matched.first());
    let Some(chosen) = chosen else {
        return Err(if candidates.is_empty() {
            AuthError::NoCredential
        } else {
            AuthError::WrongPassword
        });
    };
    let id = chosen.credential.id.clone();
    match &chosen.state {
        CredentialState::Active => {}
        CredentialState::Expired(_) => return Err(AuthError::Expired(id)),
        CredentialState::Revoked { .. } | CredentialState::Gone => {
            return Err(AuthError::Revoked(id));
        }
    }
    let server_final = exchange.server_final(&chosen.credential.verifier);
    send(
        reader.get_mut(),
        Authentication::SASLFinal(server_final.into_bytes().into()),
    )
    .await?;
    Ok(chosen.credential.clone())
}

/// The parts of a SCRAM exchange the proof is computed over. Built only
/// after pgwire accepted the messages' structure.
struct Exchange {
    auth_message: Vec<u8>,
    proof: Vec<u8>,
}

impl Exchange {
    fn new(
        client_first: &[u8],
        server_first: &str,
        client_final: &[u8],
    ) -> Result<Self, AuthError> {
        let bad = |what: &str| AuthError::Protocol(format!("malformed {what}"));
        let client_first =
            std::str::from_utf8(client_first).map_err(|_| bad("client-first message"))?;
        let client_final =
            std::str::from_utf8(client_final).map_err(|_| bad("client-final message"))?;
        // client-first = gs2-cbind-flag "," [authzid] "," client-first-bare
        let bare = client_first
            .splitn(3, ',')
            .nth(2)
            .ok_or_else(|| bad("client-first message"))?;
        // The proof is the final attribute of client-final.
        let at = client_final
            .rfind(",p=")
            .ok_or_else(|| bad("client-final message"))?;
        let without_proof = &client_final[..at];
        let proof = base64::engine::general_purpose::STANDARD
            .decode(&client_final[at + 3..])
            .map_err(|_| bad("client proof"))?;
        Ok(Exchange {
            auth_message: format!("{bare},{server_first},{without_proof}").into_bytes(),
            proof,
        })
    }

    /// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage);
    /// the proof holds if H(ClientKey) = StoredKey.
    fn proves(&self, v: &Verifier) -> bool {
        if self.proof.len() != v.stored_key.len() {
            return false;
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &v.stored_key);
        let signature = ring::hmac::sign(&key, &self.auth_message);
        let client_key: Vec<u8> = self
            .proof
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let stored = ring::digest::digest(&ring::digest::SHA256, &client_key);
        stored.as_ref().ct_eq(&v.stored_key).into()
    }

    fn server_final(&self, v: &Verifier) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &v.server_key);
        let signature = ring::hmac::sign(&key, &self.auth_message);
        format!(
            "v={}",
            base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
        )
    }
}

#[cfg(test)]
mod tests;
