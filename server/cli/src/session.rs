//! The cached login: tokens from the OpenID provider, kept in `tokens.json` (mode 0600, in a
//! 0700 directory), written whole to a temporary file and renamed, so a crash never leaves
//! half a file. The tokens are secrets: they are never printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::failure::{Failure, Outcome};

/// Refresh this long before the access token's expiry (clock skew, the request's own time).
pub const REFRESH_MARGIN: u64 = 30;

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub issuer: String,
    pub client_id: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("issuer", &self.issuer)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Session {
    pub fn needs_refresh(&self) -> bool {
        self.expires_at <= now() + REFRESH_MARGIN
    }

    /// The access token's claims, decoded without verification: for display only; the
    /// server is what verifies the token.
    pub fn claims(&self) -> Claims {
        claims(&self.access_token)
    }
}

/// The claims of an access token the CLI shows or uses (its expiry). Providers lay tokens
/// out as they like: other claims are ignored, and a claim of another type than expected
/// counts as absent.
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    #[serde(default, deserialize_with = "lenient")]
    pub sub: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub preferred_username: Option<String>,
    /// Seconds since the epoch.
    #[serde(default, deserialize_with = "lenient")]
    pub exp: Option<u64>,
    /// Keycloak's realm roles (where the server looks for the operator role).
    #[serde(default, deserialize_with = "lenient")]
    pub realm_access: Option<Access>,
    /// Keycloak's client roles, by client.
    #[serde(default, deserialize_with = "lenient")]
    pub resource_access: Option<BTreeMap<String, Access>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Access {
    #[serde(default, deserialize_with = "lenient")]
    pub roles: Option<Vec<String>>,
}

/// Any JSON, kept as `T` when it is one, else absent (for fields a third party fills in).
pub fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// The claims of a JWT, unverified; none for anything that is not one.
pub fn claims(jwt: &str) -> Claims {
    jwt.split('.')
        .nth(1)
        .and_then(|p| Base64UrlUnpadded::decode_vec(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn load(path: &Path) -> Outcome<Option<Session>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::Other(format!("{}: {e}", path.display()))),
    };
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
        eprintln!(
            "attestation: {} was readable by others; its mode is now 0600",
            path.display()
        );
    }
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Failure::Auth(format!(
            "the token cache {} is damaged ({e}): run `attestation auth login`",
            path.display()
        ))
    })
}

pub fn save(path: &Path, session: &Session) -> Outcome {
    let io = |e: std::io::Error| Failure::Other(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let body = serde_json::to_vec_pretty(session).map_err(|e| Failure::Other(e.to_string()))?;
    file.write_all(&body).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

pub fn remove(path: &Path) -> Outcome<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Failure::Other(format!("{}: {e}", path.display()))),
    }
}
