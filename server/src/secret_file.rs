//! Server secrets kept as files beside the registry, never inside it (so a registry backup
//! does not carry them): hex, one line, mode 0600, refused at start-up when others can read
//! them, made on first start.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The `len` bytes in `path`, or new ones (from `fresh`, tried until `valid` accepts them)
/// written there; answers them and whether they were made now. `what` names the secret in
/// errors.
pub fn load_or_create(
    path: &Path,
    len: usize,
    what: &str,
    mut fresh: impl FnMut(&mut [u8]),
    valid: impl Fn(&[u8]) -> bool,
) -> Result<(Vec<u8>, bool), String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
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
            let mut bytes = vec![0u8; len];
            attest_common::hex::decode_into(text.trim(), &mut bytes)
                .map_err(|e| format!("{} is not a {what}: {e}", path.display()))?;
            if !valid(&bytes) {
                return Err(format!("{} is not a {what}", path.display()));
            }
            Ok((bytes, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let mut bytes = vec![0u8; len];
            loop {
                fresh(&mut bytes);
                if valid(&bytes) {
                    break;
                }
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let mut hex = vec![0u8; len * 2];
            let text = attest_common::hex::encode(&bytes, &mut hex);
            writeln!(file, "{text}")
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((bytes, true))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let fill = |b: &mut [u8]| getrandom::fill(b).unwrap();
        let (made, created) = load_or_create(&path, 48, "key", fill, |_| true).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (loaded, created) = load_or_create(&path, 48, "key", fill, |_| true).unwrap();
        assert_eq!((loaded, created), (made, false));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path, 48, "key", fill, |_| true).unwrap_err();
        assert!(e.contains("readable by others"), "{e}");
    }
}
