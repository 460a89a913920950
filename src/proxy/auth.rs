//! Client authentication: SCRAM-SHA-256 against a [`CredentialSource`].
//!
//! The firewall never stores or sees a reusable secret: a credential is a SCRAM
//! verifier (salt, iterations, StoredKey, ServerKey). Unknown identities go
//! through the same exchange with a fake verifier and fail with the same error
//! as a wrong password, so the firewall does not reveal which identities exist.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth, gen_salted_password};
use pgwire::messages::Message;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::DevCredential;
use crate::protocol::{FrameReader, PgError};

/// Iterations for verifiers we create (PostgreSQL's default).
pub const SCRAM_ITERATIONS: usize = 4096;

/// A SCRAM-SHA-256 verifier: everything needed to check a password, nothing
/// that lets anyone log in with it.
#[derive(Clone)]
pub struct Verifier {
    pub salt: Vec<u8>,
    pub iterations: usize,
    pub stored_key: Vec<u8>,
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
    /// Derive a verifier from a password with a fresh random salt.
    pub fn from_password(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Self::from_password_with_salt(password, &salt, SCRAM_ITERATIONS)
    }

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

    fn to_secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
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
}

/// Where credentials come from. Grants implement this; until then the
/// development source reads one secret per identity from env or file.
pub trait CredentialSource: Send + Sync + 'static {
    /// The credential `identity` may use right now, if any.
    fn lookup(&self, identity: &str) -> Option<Credential>;
}

/// Development credentials from config (`[[dev_credentials]]`).
#[derive(Debug, Default)]
pub struct DevCredentials {
    by_identity: HashMap<String, Credential>,
}

impl DevCredentials {
    pub fn from_config(entries: &[DevCredential]) -> Result<Self, crate::config::ConfigError> {
        let mut by_identity = HashMap::new();
        for e in entries {
            let secret = e
                .secret
                .read(&format!("dev_credentials for {}", e.identity))?;
            by_identity.insert(
                e.identity.clone(),
                Credential {
                    id: format!("dev:{}", e.identity),
                    identity: e.identity.clone(),
                    role: e.role.clone(),
                    verifier: Verifier::from_password(&secret),
                },
            );
        }
        Ok(DevCredentials { by_identity })
    }
}

impl CredentialSource for DevCredentials {
    fn lookup(&self, identity: &str) -> Option<Credential> {
        self.by_identity.get(identity).cloned()
    }
}

/// Why authentication did not succeed; all map to the same client error.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown identity")]
    UnknownIdentity,
    #[error("wrong password")]
    WrongPassword,
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

/// Per-process key for fake salts, so probing an unknown identity twice
/// yields the same salt, as a real identity would.
fn fake_verifier(identity: &str) -> Verifier {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut h = Sha256::new();
    h.update(key);
    h.update(identity.as_bytes());
    let salt = h.finalize()[..16].to_vec();
    Verifier {
        salt,
        iterations: SCRAM_ITERATIONS,
        stored_key: rand::random::<[u8; 32]>().to_vec(),
        server_key: rand::random::<[u8; 32]>().to_vec(),
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

/// Run SCRAM-SHA-256 with the client. On success the client has been sent
/// `AuthenticationSASLFinal` (but not yet `AuthenticationOk`, which follows
/// once the upstream connection is up).
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut FrameReader<S>,
    source: &Arc<dyn CredentialSource>,
    user: &str,
) -> Result<Credential, AuthError> {
    let credential = source.lookup(user);
    let verifier = match &credential {
        Some(c) => c.verifier.clone(),
        None => fake_verifier(user),
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
    let server = ScramServerAuth::new();
    let (server_first, waiting) = server
        .on_client_first_message_with_secret(&client_first, verifier.to_secret())
        .map_err(|e| AuthError::Protocol(e.to_string()))?;
    send(
        reader.get_mut(),
        Authentication::SASLContinue(server_first.into_bytes().into()),
    )
    .await?;

    let response = read_password_message(reader)
        .await?
        .into_sasl_response()
        .map_err(|e| AuthError::Protocol(e.to_string()))?;
    match waiting.on_client_final_message(&response.data) {
        Ok(server_final) => {
            let Some(credential) = credential else {
                // Unreachable in practice: the fake verifier's keys are random.
                return Err(AuthError::UnknownIdentity);
            };
            send(
                reader.get_mut(),
                Authentication::SASLFinal(server_final.into_bytes().into()),
            )
            .await?;
            Ok(credential)
        }
        Err(pgwire::error::PgWireError::InvalidPassword(_)) => Err(if credential.is_some() {
            AuthError::WrongPassword
        } else {
            AuthError::UnknownIdentity
        }),
        Err(e) => Err(AuthError::Protocol(e.to_string())),
    }
}
