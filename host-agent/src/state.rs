//! What the agent keeps between runs, in its state directory (0700, files 0600).
//!
//! The AK is a transient TPM object; what survives a reboot is its wrapped private blob,
//! which only this TPM can load under its EK. Keeping the same AK matters: the server bound
//! it to the EK by credential activation, and a new AK would have to prove itself again.
//! The activation secret is kept until the server has accepted the proof, so an agent that
//! crashes between registering and attesting does not have to register again. Every file is
//! written to a temporary name, synced, then renamed: a crash leaves the old file or the new
//! one, never half of one.
//!
//! The directory holds secrets, so it must be ours alone: not a symbolic link, owned by the
//! agent's user, mode 0700 (set when we own it, refused otherwise). Temporary files get
//! random names and are created exclusively (`O_EXCL`) without following links
//! (`O_NOFOLLOW`), and files are read without following links: a link planted in the
//! directory (or in place of a temporary file) cannot redirect a write or a read.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

const ENROLLMENT: &str = "enrollment.json";
const AK_PUBLIC: &str = "ak.pub";
const AK_PRIVATE: &str = "ak.priv";
const ACTIVATION_SECRET: &str = "activation-secret";
/// The server's response key pinned at registration, when none was configured.
pub const PINNED_SERVER_KEY: &str = "server-key.pem";

/// Who this machine is to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Format of this file; this is version 1.
    pub version: u8,
    pub server: String,
    pub machine_id: String,
    pub ek_fingerprint: String,
    /// `ecc-p384` or `rsa-2048`.
    pub ek_type: String,
    /// `register` or `self-register`.
    pub registered_via: String,
    #[serde(default)]
    pub iso_url: Option<String>,
    #[serde(default)]
    pub config_url: Option<String>,
    /// A config the server told us to apply whose hook has not succeeded yet: retried on
    /// every run until it does, so an apply-config answer (sent once) is never lost.
    #[serde(default)]
    pub pending_apply_config: Option<String>,
    /// The SHA-384 (hex) the signed answer named for that config: nothing else is applied.
    #[serde(default)]
    pub pending_config_sha384: Option<String>,
    /// The SHA-384 (hex) of the config whose hook last succeeded: reported to the server in
    /// every attestation, so that it stops offering it.
    #[serde(default)]
    pub applied_config_sha384: Option<String>,
    /// The last action whose hook ran, so that lock runs once per lock, not per heartbeat.
    #[serde(default)]
    pub last_action: Option<String>,
    /// The boot (Linux `boot_id`) in which the lock hook last ran: after a reboot a machine
    /// still locked runs it again (a lock must survive a power cycle).
    #[serde(default)]
    pub lock_boot_id: Option<String>,
}

/// This boot's identity (`/proc/sys/kernel/random/boot_id`), when the system has one.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl Enrollment {
    pub const VERSION: u8 = 1;
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating it with mode 0700 if needed) the state directory; refuses one that
    /// is a symbolic link or belongs to another user.
    pub fn open(path: &Path) -> Result<StateDir> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create the state directory {}", path.display())
                });
            }
        }
        let meta = fs::symlink_metadata(path)
            .with_context(|| format!("cannot inspect the state directory {}", path.display()))?;
        if meta.file_type().is_symlink() {
            bail!(
                "the state directory {} is a symbolic link: refusing it (it holds secrets; \
                 point the agent at the real directory)",
                path.display()
            );
        }
        if !meta.is_dir() {
            bail!("the state directory {} is not a directory", path.display());
        }
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            bail!(
                "the state directory {} belongs to user {}, not to this agent's user {me}: \
                 refusing it (it holds secrets)",
                path.display(),
                meta.uid()
            );
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set mode 0700 on {}", path.display()))?;
        Ok(StateDir {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `name` atomically with mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let target = self.file(name);
        write_private(&target, bytes)?;
        fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot write {}", target.display()))
    }

    /// Reads `name` (never through a symbolic link); `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        use std::io::Read as _;
        let path = self.file(name);
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                bail!("{} is a symbolic link: refusing to read it", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Some(bytes))
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.file(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    pub fn enrollment(&self) -> Result<Option<Enrollment>> {
        let Some(bytes) = self.read(ENROLLMENT)? else {
            return Ok(None);
        };
        let e: Enrollment = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", self.file(ENROLLMENT).display()))?;
        if e.version != Enrollment::VERSION {
            bail!(
                "{} has format version {}, this agent reads version {}",
                self.file(ENROLLMENT).display(),
                e.version,
                Enrollment::VERSION
            );
        }
        Ok(Some(e))
    }

    pub fn save_enrollment(&self, e: &Enrollment) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(e)?;
        json.push(b'\n');
        self.write(ENROLLMENT, &json)
    }

    /// The saved AK blobs (TPM2B_PUBLIC, TPM2B_PRIVATE).
    pub fn ak(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match (self.read(AK_PUBLIC)?, self.read(AK_PRIVATE)?) {
            (Some(public), Some(private)) => Ok(Some((public, private))),
            (None, None) => Ok(None),
            _ => bail!(
                "{} holds only half of the AK (ak.pub / ak.priv): register again",
                self.path.display()
            ),
        }
    }

    pub fn save_ak(&self, public: &[u8], private: &[u8]) -> Result<()> {
        self.write(AK_PUBLIC, public)?;
        self.write(AK_PRIVATE, private)
    }

    pub fn activation_secret(&self) -> Result<Option<Vec<u8>>> {
        self.read(ACTIVATION_SECRET)
    }

    pub fn save_activation_secret(&self, secret: &[u8]) -> Result<()> {
        self.write(ACTIVATION_SECRET, secret)
    }
}

/// Writes `target` whole, mode 0600: a temporary file beside it with a random name, made
/// exclusively and without following links (`O_EXCL | O_NOFOLLOW`), synced, then renamed
/// over `target` (a link at `target` is replaced, never followed). Also the agent's other
/// outputs (receipts).
pub fn write_private(target: &Path, bytes: &[u8]) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s")).unwrap();
        assert_eq!(
            fs::metadata(state.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(state.enrollment().unwrap(), None);
        let e = Enrollment {
            version: Enrollment::VERSION,
            server: "http://127.0.0.1:1".into(),
            machine_id: "m".into(),
            ek_fingerprint: "ab".repeat(48),
            ek_type: "ecc-p384".into(),
            registered_via: "register".into(),
            iso_url: None,
            config_url: None,
            pending_apply_config: Some("http://x/c".into()),
            pending_config_sha384: Some("ab".repeat(48)),
            applied_config_sha384: None,
            last_action: None,
            lock_boot_id: None,
        };
        state.save_enrollment(&e).unwrap();
        assert_eq!(state.enrollment().unwrap(), Some(e));
        state.save_activation_secret(&[7; 32]).unwrap();
        let mode = fs::metadata(state.path().join(ACTIVATION_SECRET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(state.activation_secret().unwrap(), Some(vec![7; 32]));

        state.write(AK_PUBLIC, b"x").unwrap();
        let err = state.ak().unwrap_err().to_string();
        assert!(err.contains("only half of the AK"), "{err}");

        fs::write(state.path().join(ENROLLMENT), b"{\"version\":9}").unwrap();
        assert!(state.enrollment().is_err());
    }

    /// Review (issue 25, item 5): a symlinked or foreign state directory is refused, and a
    /// link planted in it redirects neither a read nor a write.
    #[test]
    fn links_and_foreign_directories_are_refused() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        StateDir::open(&real).unwrap();
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        let err = StateDir::open(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");

        // A directory of another user: made so when we are root, else one that exists.
        let foreign = if unsafe { libc::geteuid() } == 0 {
            let d = dir.path().join("foreign");
            fs::create_dir(&d).unwrap();
            let c = std::ffi::CString::new(d.to_str().unwrap()).unwrap();
            // SAFETY: chown(2) on a path we just made.
            assert_eq!(unsafe { libc::chown(c.as_ptr(), 1, 1) }, 0);
            d
        } else {
            PathBuf::from("/")
        };
        let err = StateDir::open(&foreign).unwrap_err().to_string();
        assert!(err.contains("belongs to user"), "{err}");

        // A link planted where a secret is read: refused; where one is written: replaced,
        // the file it pointed at untouched.
        let state = StateDir::open(&real).unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"not yours").unwrap();
        symlink(&outside, real.join(ACTIVATION_SECRET)).unwrap();
        let err = state.activation_secret().unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        state.save_activation_secret(&[1; 32]).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"not yours");
        assert!(
            !fs::symlink_metadata(real.join(ACTIVATION_SECRET))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(state.activation_secret().unwrap(), Some(vec![1; 32]));
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(&real)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
