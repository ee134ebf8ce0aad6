//! The server's response key (DESIGN.md §3.7): ECDSA P-384, made on first start, kept in the
//! data directory with mode 0600, published at `GET /api/v1/server-key` so agents can pin it.
//! Every agent-facing answer that carries an action is signed with it over the agent's nonce.
//!
//! File format: the 48-byte private scalar as 96 hex characters and a newline (no PEM
//! machinery needed to read it back).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use p384::ecdsa::SigningKey;

pub const FILE_NAME: &str = "response-key";

/// Loads the key from `dir`, or makes and stores one if there is none.
pub fn load_or_create(dir: &Path) -> Result<(SigningKey, bool), String> {
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                ));
            }
            let mut scalar = [0u8; 48];
            attest_common::hex::decode_into(text.trim(), &mut scalar)
                .map_err(|e| format!("{} is not a response key: {e}", path.display()))?;
            let key = SigningKey::from_slice(&scalar)
                .map_err(|_| format!("{} is not a P-384 private key", path.display()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let key = loop {
                let mut scalar = [0u8; 48];
                getrandom::fill(&mut scalar).map_err(|e| format!("no entropy: {e}"))?;
                if let Ok(k) = SigningKey::from_slice(&scalar) {
                    break k;
                }
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let mut hex = [0u8; 96];
            let text = attest_common::hex::encode(&key.to_bytes(), &mut hex);
            writeln!(file, "{text}")
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((key, true))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.to_bytes(), again.to_bytes());

        std::fs::set_permissions(
            dir.path().join(FILE_NAME),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(
            load_or_create(dir.path())
                .unwrap_err()
                .contains("chmod 600")
        );
        std::fs::set_permissions(
            dir.path().join(FILE_NAME),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "zz\n").unwrap();
        assert!(
            load_or_create(dir.path())
                .unwrap_err()
                .contains("not a response key")
        );
    }
}
