//! Unit tests of [`super`]: verifiers, salts, and the SCRAM exchange with a
//! real SCRAM client (pgwire's, the one the firewall logs in upstream with).

use super::*;

#[test]
fn a_verifier_checks_its_own_password_and_no_other() {
    let v = Verifier::from_password_with_salt("correct horse", b"0123456789abcdef", 4096);
    assert!(v.check_password("correct horse"));
    assert!(!v.check_password("correct horse "));
    assert!(!v.check_password(""));
    assert_eq!(v.iterations, 4096);
    // The same password and salt give the same keys; another salt others.
    let again = Verifier::from_password_with_salt("correct horse", b"0123456789abcdef", 4096);
    assert_eq!(
        (&v.stored_key, &v.server_key),
        (&again.stored_key, &again.server_key)
    );
    let other = Verifier::from_password_with_salt("correct horse", b"fedcba9876543210", 4096);
    assert_ne!(v.stored_key, other.stored_key);
}

#[test]
fn a_verifier_never_shows_its_keys() {
    let v = Verifier::from_password_with_salt("s3cret", b"salt", 4096);
    let shown = format!("{v:?}");
    assert!(!shown.contains(&hex::encode(&v.stored_key)), "{shown}");
    assert!(!shown.contains(&hex::encode(&v.server_key)), "{shown}");
    assert!(!shown.contains(&hex::encode(&v.salt)), "{shown}");
}

#[test]
fn salts_are_fixed_per_identity_and_differ_between_identities() {
    let key = SaltKey::new(&[7; 32]);
    assert_eq!(key.salt("alice"), key.salt("alice"));
    assert_ne!(key.salt("alice"), key.salt("bob"));
    // A name cannot be made to collide with another by what follows it.
    assert_ne!(key.salt("al"), key.salt("al\0ice"));
    assert_eq!(key.salt("alice").len(), 16);
    // Another data directory's key, other salts.
    assert_ne!(SaltKey::new(&[8; 32]).salt("alice"), key.salt("alice"));
}

/// Credentials of one identity, each with its state.
struct Fixed {
    salts: SaltKey,
    candidates: Vec<Candidate>,
}

impl CredentialSource for Fixed {
    fn salt(&self, identity: &str) -> Vec<u8> {
        self.salts.salt(identity)
    }
    fn candidates(&self, identity: &str) -> Vec<Candidate> {
        self.candidates
            .iter()
            .filter(|c| c.credential.identity == identity)
            .cloned()
            .collect()
    }
    fn state(&self, _: &str) -> CredentialState {
        CredentialState::Active
    }
}

fn candidate(salts: &SaltKey, id: &str, secret: &str, state: CredentialState) -> Candidate {
    Candidate {
        credential: Credential {
            id: id.into(),
            identity: "alice".into(),
            role: format!("role-of-{id}"),
            verifier: Verifier::from_password_with_salt(
                secret,
                &salts.salt("alice"),
                SCRAM_ITERATIONS,
            ),
            kind: CredentialKind::Grant,
        },
        state,
    }
}

/// Log in as `user` with `password` through tokio-postgres's SCRAM client
/// against [`authenticate`]; what the firewall decided.
async fn login(source: Fixed, user: &str, password: &str) -> Result<Credential, AuthError> {
    let (client_end, server_end) = tokio::io::duplex(4096);
    let mut config = tokio_postgres::Config::new();
    config.user(user).password(password).dbname("app");
    let client = tokio::spawn(async move {
        // Ends in an error either way: no server answers after the
        // exchange. The proof it sent is what counts.
        let _ = config.connect_raw(client_end, tokio_postgres::NoTls).await;
    });
    let mut reader = FrameReader::new(server_end, 16 * 1024);
    reader
        .next_startup_packet(crate::protocol::startup::MAX_STARTUP_PACKET)
        .await
        .expect("startup packet");
    let source: Arc<dyn CredentialSource> = Arc::new(source);
    let out = authenticate(&mut reader, &source, user).await;
    drop(reader);
    let _ = client.await;
    out
}

#[tokio::test]
async fn the_exchange_takes_the_grant_whose_secret_was_proved() {
    let salts = SaltKey::new(&[1; 32]);
    let source = || Fixed {
        salts: salts.clone(),
        candidates: vec![
            candidate(&salts, "g-new", "secret-new", CredentialState::Active),
            candidate(&salts, "g-old", "secret-old", CredentialState::Active),
            candidate(
                &salts,
                "g-gone",
                "secret-gone",
                CredentialState::Expired("2026-01-01T00:00:00Z".into()),
            ),
        ],
    };
    let c = login(source(), "alice", "secret-old").await.unwrap();
    assert_eq!((c.id.as_str(), c.role.as_str()), ("g-old", "role-of-g-old"));
    let c = login(source(), "alice", "secret-new").await.unwrap();
    assert_eq!(c.id, "g-new");
    // The right secret of an expired grant: refused, and the log can say
    // which grant (the client is told only that login failed).
    let e = login(source(), "alice", "secret-gone").await.unwrap_err();
    assert!(
        matches!(&e, AuthError::Expired(id) if id == "g-gone"),
        "{e:?}"
    );
    let e = login(source(), "alice", "wrong").await.unwrap_err();
    assert!(matches!(e, AuthError::WrongPassword), "{e:?}");
    // An unknown identity goes through the same exchange, and fails.
    let e = login(source(), "mallory", "secret-new").await.unwrap_err();
    assert!(matches!(e, AuthError::NoCredential), "{e:?}");
    // Whatever the reason, the client sees one error.
    for e in [
        AuthError::WrongPassword,
        AuthError::NoCredential,
        AuthError::Expired("g".into()),
    ] {
        let client = e.to_client_error("alice");
        assert_eq!(client.code, "28P01");
        assert!(!client.message.contains("expired"), "{client}");
    }
}
