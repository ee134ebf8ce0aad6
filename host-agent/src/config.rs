//! The agent's settings: command-line flags over environment variables over a TOML file
//! over defaults, as Keylime's push agent does.
//!
//! The file is strict (unknown keys are errors): a misspelt hook name must not silently
//! leave a machine that never locks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use attest_common::wire::Role;
use clap::ValueEnum as _;
use serde::Deserialize;

use crate::tpm::{AkType, EkType};

/// Where the file is looked for when `--config` is not given (absent is fine there).
pub const DEFAULT_CONFIG: &str = "/etc/attest-agent/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/attest-agent";
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// One layer of settings: the TOML file, or the flags and environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Base URL of the attestation server.
    pub server: Option<String>,
    /// TCTI of the TPM (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`).
    pub tcti: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// The server's response public key (PEM or DER SubjectPublicKeyInfo) to pin.
    pub server_key: Option<PathBuf>,
    /// CA certificates (PEM) to trust for an https server instead of the web roots.
    pub ca_file: Option<PathBuf>,
    /// Accept a plain `http://` server (Keylime's push agent has the same switch): nothing
    /// on the wire is then private, machine configs with their secrets included.
    pub allow_plain_http: Option<bool>,
    pub ek_type: Option<String>,
    pub ak_type: Option<String>,
    pub desired_role: Option<String>,
    pub cluster_id: Option<String>,
    /// Timeout of one HTTP request, seconds.
    pub timeout_seconds: Option<u64>,
    /// Longest wait between two attestations, whatever interval the server advises.
    pub max_interval_seconds: Option<u64>,
    #[serde(default)]
    pub hooks: HookLayer,
}

/// Commands run (by `sh -c`) when the server answers with an action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookLayer {
    /// Gets the machine config (YAML) on stdin, e.g.
    /// `talosctl apply-config --insecure --nodes 127.0.0.1 --file /dev/stdin`.
    pub apply_config: Option<String>,
    pub lock: Option<String>,
    pub wipe: Option<String>,
    /// Longest a hook may run before it is killed, seconds.
    pub timeout_seconds: Option<u64>,
}

impl Layer {
    /// Reads a TOML file; a missing file is an error only when `required`.
    pub fn from_file(path: &Path, required: bool) -> Result<Layer> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Layer::default());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid agent config", path.display()))
    }

    /// `self` where set, else `lower`.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            server: self.server.or(lower.server),
            tcti: self.tcti.or(lower.tcti),
            state_dir: self.state_dir.or(lower.state_dir),
            server_key: self.server_key.or(lower.server_key),
            ca_file: self.ca_file.or(lower.ca_file),
            allow_plain_http: self.allow_plain_http.or(lower.allow_plain_http),
            ek_type: self.ek_type.or(lower.ek_type),
            ak_type: self.ak_type.or(lower.ak_type),
            desired_role: self.desired_role.or(lower.desired_role),
            cluster_id: self.cluster_id.or(lower.cluster_id),
            timeout_seconds: self.timeout_seconds.or(lower.timeout_seconds),
            max_interval_seconds: self.max_interval_seconds.or(lower.max_interval_seconds),
            hooks: HookLayer {
                apply_config: self.hooks.apply_config.or(lower.hooks.apply_config),
                lock: self.hooks.lock.or(lower.hooks.lock),
                wipe: self.hooks.wipe.or(lower.hooks.wipe),
                timeout_seconds: self.hooks.timeout_seconds.or(lower.hooks.timeout_seconds),
            },
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Set for commands that talk to the server.
    pub server: Option<String>,
    pub tcti: String,
    pub state_dir: PathBuf,
    pub server_key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// `allow_plain_http`: a plain `http://` server URL is accepted (with a warning);
    /// otherwise only `https://`.
    pub allow_plain_http: bool,
    /// `None`: the P-384 EK if it has a certificate, else RSA-2048 if it has one, else P-384.
    pub ek_type: Option<EkType>,
    /// `None`: P-384 (ECDSA-SHA384), whatever the EK.
    pub ak_type: Option<AkType>,
    pub desired_role: Option<Role>,
    pub cluster_id: String,
    pub timeout: Duration,
    /// The advised interval is kept within [`MIN_INTERVAL`] and this
    /// (`max_interval_seconds`, default 3600).
    pub max_interval: Duration,
    pub hooks: Hooks,
}

/// Shortest wait between two attestations, whatever the server advises.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub apply_config: Option<String>,
    pub lock: Option<String>,
    pub wipe: Option<String>,
    pub timeout: Duration,
}

impl Settings {
    pub fn resolve(layer: Layer) -> Result<Settings> {
        let ek_type = layer
            .ek_type
            .map(|s| {
                s.parse::<EkType>()
                    .map_err(|e| anyhow!("ek_type '{s}': {e}"))
            })
            .transpose()?;
        let ak_type = layer
            .ak_type
            .map(|s| {
                AkType::from_str(&s, true)
                    .map_err(|_| anyhow!("ak_type '{s}': expected ecc-p384, ecc-p256 or rsa-2048"))
            })
            .transpose()?;
        let desired_role = layer
            .desired_role
            .map(|s| {
                s.parse::<Role>()
                    .map_err(|e| anyhow!("desired_role '{s}': {e}"))
            })
            .transpose()?;
        let server = layer.server.map(|s| s.trim_end_matches('/').to_owned());
        if let Some(s) = &server
            && !(s.starts_with("http://") || s.starts_with("https://"))
        {
            bail!("server '{s}' must be an http:// or https:// URL");
        }
        let timeout = layer.timeout_seconds.unwrap_or(30);
        if timeout == 0 {
            bail!("timeout_seconds must be at least 1");
        }
        let max_interval = Duration::from_secs(layer.max_interval_seconds.unwrap_or(3600));
        if max_interval < MIN_INTERVAL {
            bail!(
                "max_interval_seconds must be at least {}",
                MIN_INTERVAL.as_secs()
            );
        }
        Ok(Settings {
            server,
            tcti: layer.tcti.unwrap_or_else(|| DEFAULT_TCTI.into()),
            state_dir: layer.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            server_key: layer.server_key,
            ca_file: layer.ca_file,
            allow_plain_http: layer.allow_plain_http.unwrap_or(false),
            ek_type,
            ak_type,
            desired_role,
            cluster_id: layer.cluster_id.unwrap_or_else(|| "default".into()),
            timeout: Duration::from_secs(timeout),
            max_interval,
            hooks: Hooks {
                apply_config: layer.hooks.apply_config,
                lock: layer.hooks.lock,
                wipe: layer.hooks.wipe,
                timeout: Duration::from_secs(layer.hooks.timeout_seconds.unwrap_or(600)),
            },
        })
    }

    /// The server URL, or an error saying how to set it.
    pub fn server(&self) -> Result<&str> {
        self.server.as_deref().ok_or_else(|| {
            anyhow!("no server: pass --server URL, set ATTEST_AGENT_SERVER, or set `server` in the config file")
        })
    }

    /// How long to wait before the next attestation when the server advises `seconds`:
    /// never less than [`MIN_INTERVAL`] (an answer, true or forged, cannot make the agent
    /// hammer the server), never more than `max_interval` (nor make it fall silent).
    pub fn interval(&self, seconds: u32) -> Duration {
        Duration::from_secs(seconds.into()).clamp(MIN_INTERVAL, self.max_interval)
    }

    /// Refuses a plain `http://` URL unless `allow_plain_http` is set.
    pub fn check_scheme(&self, url: &str) -> Result<()> {
        if is_plain_http(url) && !self.allow_plain_http {
            bail!(
                "{url} is plain HTTP: use an https:// server URL, or, to send attestations and \
                 receive machine configs (with their secrets) unencrypted, set \
                 allow_plain_http = true (--allow-plain-http, ATTEST_AGENT_ALLOW_PLAIN_HTTP=true)"
            );
        }
        Ok(())
    }
}

/// Whether `url` is `http://` (not https).
pub fn is_plain_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_file_over_defaults_and_strict_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            r#"
server = "http://file:8080/"
tcti = "swtpm:port=1"
desired_role = "worker-app"
[hooks]
lock = "poweroff"
"#,
        )
        .unwrap();
        let file = Layer::from_file(&path, true).unwrap();
        let flags = Layer {
            server: Some("http://flag:1".into()),
            ..Layer::default()
        };
        let s = Settings::resolve(flags.over(file)).unwrap();
        assert_eq!(s.server.as_deref(), Some("http://flag:1"));
        assert_eq!(s.tcti, "swtpm:port=1");
        assert_eq!(s.desired_role, Some(Role::WorkerApp));
        assert_eq!(s.hooks.lock.as_deref(), Some("poweroff"));
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(s.timeout, Duration::from_secs(30));

        std::fs::write(&path, "[hooks]\nlcok = \"poweroff\"\n").unwrap();
        let err = format!("{:#}", Layer::from_file(&path, true).unwrap_err());
        assert!(err.contains("unknown field `lcok`"), "{err}");
        assert!(Layer::from_file(&dir.path().join("none.toml"), false).is_ok());
        assert!(Layer::from_file(&dir.path().join("none.toml"), true).is_err());

        let bad = Layer {
            server: Some("ftp://x".into()),
            ..Layer::default()
        };
        assert!(Settings::resolve(bad).is_err());
        let bad = Layer {
            ek_type: Some("rsa-4096".into()),
            ..Layer::default()
        };
        assert!(
            Settings::resolve(bad)
                .unwrap_err()
                .to_string()
                .contains("ek_type")
        );
        let none = Settings::resolve(Layer::default()).unwrap();
        assert!(none.server().unwrap_err().to_string().contains("--server"));
    }

    #[test]
    fn plain_http_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "server = \"http://10.0.0.1:8080\"\n").unwrap();
        let file = Layer::from_file(&path, true).unwrap();
        let s = Settings::resolve(Layer::default().over(file.clone())).unwrap();
        assert!(!s.allow_plain_http);
        let e = s
            .check_scheme("http://10.0.0.1:8080")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("allow_plain_http") && e.contains("https://"),
            "{e}"
        );
        assert!(s.check_scheme("HTTP://x").is_err());
        s.check_scheme("https://10.0.0.1:8080").unwrap();
        // From the file, or from a flag over it.
        std::fs::write(
            &path,
            "server = \"http://10.0.0.1:8080\"\nallow_plain_http = true\n",
        )
        .unwrap();
        let s = Settings::resolve(Layer::from_file(&path, true).unwrap()).unwrap();
        s.check_scheme("http://10.0.0.1:8080").unwrap();
        let flags = Layer {
            allow_plain_http: Some(true),
            ..Layer::default()
        };
        let s = Settings::resolve(flags.over(file)).unwrap();
        s.check_scheme("http://10.0.0.1:8080").unwrap();
    }

    /// Review (issue 25, item 7): the advised interval is bounded on the agent's side.
    #[test]
    fn the_advised_interval_is_bounded() {
        let s = Settings::resolve(Layer::default()).unwrap();
        assert_eq!(s.interval(0), MIN_INTERVAL);
        assert_eq!(s.interval(60), Duration::from_secs(60));
        assert_eq!(s.interval(u32::MAX), Duration::from_secs(3600));
        let capped = Settings::resolve(Layer {
            max_interval_seconds: Some(120),
            ..Layer::default()
        })
        .unwrap();
        assert_eq!(capped.interval(600), Duration::from_secs(120));
        let err = Settings::resolve(Layer {
            max_interval_seconds: Some(1),
            ..Layer::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");
    }
}
