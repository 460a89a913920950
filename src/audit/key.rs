//! The firewall's Ed25519 signing key: generated on first start into the
//! data directory (mode 0600) or loaded from a configured file. The file
//! holds the 32-byte seed as hex.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit key {path}: {message}")]
    Bad { path: String, message: String },
}

/// Load the key at `path`, creating it if `create` and it does not exist.
pub fn load_or_create(path: &Path, create: bool) -> Result<SigningKey, KeyError> {
    let bad = |message: String| KeyError::Bad {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                return Err(bad(
                    "is readable by group or others; chmod 600 it (whoever reads it can forge the log)"
                        .into(),
                ));
            }
            let seed: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("does not hold a 32-byte hex seed".into()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let seed: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| bad(format!("cannot create: {e}")))?;
            writeln!(f, "{}", hex::encode(seed)).map_err(|e| bad(e.to_string()))?;
            f.sync_all().map_err(|e| bad(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated a new audit signing key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The public key as 64 hex characters.
pub fn public_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// Parse a public key given as 64 hex characters.
pub fn parse_public(hex_key: &str) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("veil-key-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        let a = load_or_create(&p, true).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&p, false).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(public_hex(&a).len(), 64);
        assert!(parse_public(&public_hex(&a)).is_some());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&p, false).is_err());
        assert!(load_or_create(&dir.join("missing"), false).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
