//! The firewall's SCRAM-SHA-256 verifiers against PostgreSQL's own: for the
//! salt and iteration count PostgreSQL chose, the keys the firewall derives
//! from a password are the keys PostgreSQL stored for it. A client that can
//! log in to PostgreSQL with a password proves the same secret to us.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::cluster;
use infraveil::auth::Verifier;

/// PostgreSQL's stored verifier for `password`, taken apart:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn postgres_verifier(role: &str, password: &str) -> (usize, Vec<u8>, Vec<u8>, Vec<u8>) {
    let literal = password.replace('\'', "''");
    let stored = cluster()
        .psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 DROP ROLE IF EXISTS {role};
                 CREATE ROLE {role} LOGIN PASSWORD '{literal}';
                 SELECT rolpassword FROM pg_authid WHERE rolname = '{role}';"
            ),
        )
        .expect("create a role with a SCRAM password");
    let stored = stored.lines().last().unwrap_or_default().trim().to_owned();
    let rest = stored
        .strip_prefix("SCRAM-SHA-256$")
        .unwrap_or_else(|| panic!("not a SCRAM verifier: {stored}"));
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    (
        iterations.parse().unwrap(),
        B64.decode(salt).unwrap(),
        B64.decode(stored_key).unwrap(),
        B64.decode(server_key).unwrap(),
    )
}

#[test]
fn verifiers_match_postgresqls_for_the_same_salt() {
    let passwords = [
        "pencil",
        // The form of the secrets grants issue.
        "3f9a0c4d2b7e8f1a6c5d4e3b2a1f0e9d8c7b6a5f4e3d2c1b",
        "with 'quotes' and spaces",
        // Non-ASCII already in NFC: SASLprep leaves it as it is.
        "pässwörd-ünïcode",
        // SASLprep maps these (NFKC): both sides must, or a client's proof
        // from the mapped password would not match.
        "ﬁ-ligature",
        "a\u{0308}-decomposed",
    ];
    for (i, password) in passwords.iter().enumerate() {
        let (iterations, salt, stored, server) =
            postgres_verifier(&format!("scram_probe_{i}"), password);
        let ours = Verifier::from_password_with_salt(password, &salt, iterations);
        assert_eq!(ours.stored_key, stored, "StoredKey of {password:?}");
        assert_eq!(ours.server_key, server, "ServerKey of {password:?}");
        assert!(ours.check_password(password));
        assert!(!ours.check_password(&format!("{password}x")));
    }
}
