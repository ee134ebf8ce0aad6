//! Where the CLI finds the server and the OpenID provider: flags, then `ATTESTATION_*`
//! variables, then the config file, then defaults. The config file and the token cache live
//! in `$XDG_CONFIG_HOME/attestation/` (else `~/.config/attestation/`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::failure::{Failure, Outcome};

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_CLIENT_ID: &str = "attestation-cli";
pub const DEFAULT_SCOPE: &str = "openid profile offline_access";

/// `config.toml`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    api_url: Option<String>,
    oidc_issuer: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: String,
    pub issuer: Option<String>,
    pub client_id: String,
    pub scope: String,
    /// `ITL_ADMIN_TOKEN`: break-glass, used instead of any cached login.
    pub admin_token: Option<String>,
    /// `--ca-file`, `ATTESTATION_CA_FILE`, `ca_file`: CA certificates (PEM) trusted besides
    /// the roots (crate::api::set_trust).
    pub ca_file: Option<PathBuf>,
    pub dir: PathBuf,
}

/// What the command line and the environment gave (clap reads both).
pub struct Given {
    pub api_url: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

pub fn config_dir() -> Outcome<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => Path::new(&h).join(".config"),
            None => {
                return Err(Failure::Usage(
                    "neither XDG_CONFIG_HOME nor HOME is set: cannot place the token cache".into(),
                ));
            }
        },
    };
    Ok(base.join("attestation"))
}

impl Settings {
    pub fn load(given: Given) -> Outcome<Settings> {
        let dir = config_dir()?;
        let path = given
            .config
            .clone()
            .unwrap_or_else(|| dir.join("config.toml"));
        let file: File = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                Failure::Usage(format!("config file {}: {}", path.display(), e.message()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && given.config.is_none() => {
                File::default()
            }
            Err(e) => {
                return Err(Failure::Usage(format!(
                    "config file {}: {e}",
                    path.display()
                )));
            }
        };
        let api_url = given
            .api_url
            .or(file.api_url)
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(Failure::Usage(format!(
                "the API URL '{api_url}' must start with http:// or https://"
            )));
        }
        Ok(Settings {
            api_url: api_url.trim_end_matches('/').to_owned(),
            issuer: given
                .issuer
                .or(file.oidc_issuer)
                .map(|i| i.trim_end_matches('/').to_owned()),
            client_id: given
                .client_id
                .or(file.client_id)
                .unwrap_or_else(|| DEFAULT_CLIENT_ID.into()),
            scope: file.scope.unwrap_or_else(|| DEFAULT_SCOPE.into()),
            admin_token: std::env::var("ITL_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            // A relative ca_file in the config file is relative to the file.
            ca_file: given.ca_file.or_else(|| {
                file.ca_file
                    .map(|f| path.parent().map_or(f.clone(), |d| d.join(&f)))
            }),
            dir,
        })
    }

    pub fn token_cache(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    pub fn issuer(&self) -> Outcome<&str> {
        self.issuer.as_deref().ok_or_else(|| {
            Failure::Usage(
                "no OpenID provider: set ATTESTATION_OIDC_ISSUER, --issuer, or oidc_issuer in \
                 the config file"
                    .into(),
            )
        })
    }
}
