//! Server configuration from `ITL_*` environment variables.
//!
//! A bad value stops start-up with a message that names the variable; nothing falls back
//! silently to a default when a value was given.

use std::net::SocketAddr;
use std::path::PathBuf;

use attest_common::wire::Role;

use crate::factory::IsoSource;
use crate::oidc::OidcConfig;
use crate::service::{AkPolicy, AuditCheckpoints, Challenges, DualControl, parse_pcr_selection};

/// Default listen address: loopback only. Exposing the server is a deliberate choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// `ITL_TALOS_VERSION` unless set: the Talos release the bundled schema (`../shared/talos`) is for.
pub const DEFAULT_TALOS_VERSION: &str = "v1.9.5";
/// The public Talos Image Factory, the seed's default ISO source (`ITL_FACTORY_URL`).
pub const DEFAULT_FACTORY_URL: &str = "https://factory.talos.dev";

/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `ITL_LISTEN`: address and port to listen on.
    pub listen: SocketAddr,
    /// `ITL_DATA_DIR`: where `attestation.redb` lives.
    pub data_dir: PathBuf,
    /// `ITL_SERVICE_URL`: the URL agents reach this server at (config URLs are built on it);
    /// unset: `https://` (with TLS) or `http://`, and the address actually listened on.
    pub service_url: Option<String>,
    /// `ITL_CONFIG_DIR`: role base configs (`controlplane.yaml`, `worker-infra.yaml`,
    /// `worker-app.yaml`); unset: config endpoints answer 503.
    pub config_dir: Option<PathBuf>,
    /// `ITL_ADMIN_TOKEN`: the break-glass operator token (acts as `SYSTEM`).
    pub admin_token: Option<String>,
    /// `ITL_MAX_BODY_BYTES`: largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// `ITL_MAX_CONNECTIONS`: connections served at once; more wait (crate::listener).
    pub max_connections: usize,
    /// `ITL_MAX_CONNECTIONS_PER_PEER`: open connections from one address (trusted proxies
    /// exempt).
    pub max_connections_per_peer: usize,
    /// `ITL_IDLE_TIMEOUT_SECONDS`: a connection on which nothing moves this long is closed.
    pub idle_timeout: std::time::Duration,
    /// `ITL_DUAL_CONTROL_ROLES`, `ITL_DUAL_CONTROL_QUORUM`, `ITL_DUAL_CONTROL_WINDOW_SECONDS`.
    pub dual_control: DualControl,
    /// `ITL_CHALLENGE_LIFETIME_SECONDS`, `ITL_PCR_SELECTION`.
    pub challenges: Challenges,
    /// `ITL_CONFIG_URL_SECONDS`: lifetime of a single-use config URL.
    pub config_url_seconds: u64,
    /// `ITL_MAX_UNVERIFIED_PENDING`: unapproved machines with an unverified EK at most.
    pub max_unverified_pending: u64,
    /// `ITL_EK_CHAIN`, `ITL_EK_CA_DIR`, `ITL_EK_AIA_FETCH`.
    pub ek_chain: crate::ekchain::EkChainConfig,
    /// `ITL_OIDC_ENABLED` with `ITL_OIDC_ISSUER`, `ITL_OIDC_AUDIENCE`, `ITL_OIDC_OPERATOR_ROLE`.
    pub oidc: Option<OidcConfig>,
    /// `ITL_PCR_POLICY_FILE`: PCR policy per role (JSON); unset: every machine is held to
    /// its own baseline and a violation refuses the attestation.
    pub pcr_policy_file: Option<PathBuf>,
    /// `ITL_ENROLLMENT_CA_DIR` (default `ITL_DATA_DIR/enrollment-ca`): the Enrollment CA.
    pub enrollment_ca_dir: PathBuf,
    /// `ITL_ENROLLMENT_CERT_DAYS`: validity of machine enrollment certificates.
    pub enrollment_cert_days: u32,
    /// `ITL_ISO_URL`, or `ITL_FACTORY_URL` with `ITL_TALOS_VERSION`,
    /// `ITL_FACTORY_EXTENSIONS` and `ITL_FACTORY_TIMEOUT_SECONDS`; neither: no ISO URLs.
    pub iso: Option<IsoSource>,
    /// `ITL_TLS_CERT` and `ITL_TLS_KEY` with `ITL_HIGH_ASSURANCE`, `ITL_TLS_MIN_VERSION`,
    /// `ITL_TLS_CIPHERS` (crate::tls); `None`: plain HTTP.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `ITL_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed (crate::proxies).
    pub trusted_proxies: crate::proxies::TrustedProxies,
    /// `ITL_CA_FILE`: CA certificates (PEM) trusted for the server's own outbound HTTPS
    /// calls (OIDC provider, Image Factory) besides the Web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// `ITL_AUDIT_CHECKPOINT_ENTRIES`, `ITL_AUDIT_CHECKPOINT_MINUTES`: how often the audit
    /// chain's head is signed (DESIGN.md §6).
    pub audit_checkpoints: AuditCheckpoints,
    /// `ITL_AK_ALGORITHMS` (with `ITL_HIGH_ASSURANCE`): the AK algorithms accepted.
    pub ak_policy: AkPolicy,
}

impl std::fmt::Debug for Config {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("service_url", &self.service_url)
            .field("config_dir", &self.config_dir)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("idle_timeout", &self.idle_timeout)
            .field("dual_control", &self.dual_control)
            .field("challenges", &self.challenges)
            .field("config_url_seconds", &self.config_url_seconds)
            .field("max_unverified_pending", &self.max_unverified_pending)
            .field("ek_chain", &self.ek_chain)
            .field("oidc", &self.oidc)
            .field("pcr_policy_file", &self.pcr_policy_file)
            .field("enrollment_ca_dir", &self.enrollment_ca_dir)
            .field("enrollment_cert_days", &self.enrollment_cert_days)
            .field("iso", &self.iso)
            .field("tls", &self.tls)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("ca_file", &self.ca_file)
            .field("audit_checkpoints", &self.audit_checkpoints)
            .field("ak_policy", &self.ak_policy)
            .finish()
    }
}

/// A configuration variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen_raw = get("ITL_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().map_err(|_| ConfigError {
            variable: "ITL_LISTEN",
            message: format!("'{listen_raw}' is not an address:port such as {DEFAULT_LISTEN}"),
        })?;
        let data_dir = PathBuf::from(get("ITL_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let service_url = get("ITL_SERVICE_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &service_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError {
                variable: "ITL_SERVICE_URL",
                message: format!("'{u}' is not an http:// or https:// URL"),
            });
        }
        let config_dir = get("ITL_CONFIG_DIR").map(PathBuf::from);
        let admin_token = get("ITL_ADMIN_TOKEN").filter(|t| !t.is_empty());
        let max_body_bytes = match get("ITL_MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n >= 1024)
                .ok_or_else(|| ConfigError {
                    variable: "ITL_MAX_BODY_BYTES",
                    message: format!("'{v}' is not a byte count of at least 1024"),
                })?,
        };
        let max_connections = match get("ITL_MAX_CONNECTIONS") {
            None => 1024,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| ConfigError {
                    variable: "ITL_MAX_CONNECTIONS",
                    message: format!("'{v}' is not a whole number from 1 to 1000000"),
                })?,
        };
        let max_connections_per_peer = match get("ITL_MAX_CONNECTIONS_PER_PEER") {
            None => 64,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| ConfigError {
                    variable: "ITL_MAX_CONNECTIONS_PER_PEER",
                    message: format!("'{v}' is not a whole number from 1 to 1000000"),
                })?,
        };
        let idle_timeout = match get("ITL_IDLE_TIMEOUT_SECONDS") {
            None => std::time::Duration::from_secs(20),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=3600).contains(n))
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| ConfigError {
                    variable: "ITL_IDLE_TIMEOUT_SECONDS",
                    message: format!("'{v}' is not a number of seconds from 1 to 3600"),
                })?,
        };
        let roles = match get("ITL_DUAL_CONTROL_ROLES") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| {
                    r.parse::<Role>().map_err(|e| ConfigError {
                        variable: "ITL_DUAL_CONTROL_ROLES",
                        message: format!("'{r}': {e}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let quorum = match get("ITL_DUAL_CONTROL_QUORUM") {
            None => 2,
            Some(v) => v
                .parse()
                .ok()
                .filter(|q| *q >= 2)
                .ok_or_else(|| ConfigError {
                    variable: "ITL_DUAL_CONTROL_QUORUM",
                    message: format!("'{v}' is not a number of approvers of at least 2"),
                })?,
        };
        let window_seconds = match get("ITL_DUAL_CONTROL_WINDOW_SECONDS") {
            None => 600,
            Some(v) => v
                .parse()
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| ConfigError {
                    variable: "ITL_DUAL_CONTROL_WINDOW_SECONDS",
                    message: format!("'{v}' is not a positive number of seconds"),
                })?,
        };
        let break_glass_counts = match get("ITL_DUAL_CONTROL_BREAK_GLASS").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError {
                    variable: "ITL_DUAL_CONTROL_BREAK_GLASS",
                    message: format!("'{other}' is neither true nor false"),
                });
            }
        };
        let lifetime_seconds = match get("ITL_CHALLENGE_LIFETIME_SECONDS") {
            None => 60,
            Some(v) => v
                .parse()
                .ok()
                .filter(|s| (1..=3600).contains(s))
                .ok_or_else(|| ConfigError {
                    variable: "ITL_CHALLENGE_LIFETIME_SECONDS",
                    message: format!("'{v}' is not a number of seconds from 1 to 3600"),
                })?,
        };
        let pcr_selection = match get("ITL_PCR_SELECTION") {
            None => Challenges::default().pcr_selection,
            Some(v) => parse_pcr_selection(&v).map_err(|message| ConfigError {
                variable: "ITL_PCR_SELECTION",
                message,
            })?,
        };
        // The seed's extension polls every 60 s.
        let interval_seconds = match get("ITL_ATTESTATION_INTERVAL_SECONDS") {
            None => 60,
            Some(v) => v
                .parse()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| ConfigError {
                    variable: "ITL_ATTESTATION_INTERVAL_SECONDS",
                    message: format!("'{v}' is not a number of seconds from 1 to 86400"),
                })?,
        };
        let liveness_factor = match get("ITL_LIVENESS_FACTOR") {
            None => 5,
            Some(v) => v
                .parse()
                .ok()
                .filter(|f| (2..=1000).contains(f))
                .ok_or_else(|| ConfigError {
                    variable: "ITL_LIVENESS_FACTOR",
                    message: format!("'{v}' is not a whole number from 2 to 1000"),
                })?,
        };
        let config_url_seconds = number(
            get("ITL_CONFIG_URL_SECONDS"),
            "ITL_CONFIG_URL_SECONDS",
            300,
            10..=3600,
            "a number of seconds",
        )?;
        let max_unverified_pending = number(
            get("ITL_MAX_UNVERIFIED_PENDING"),
            "ITL_MAX_UNVERIFIED_PENDING",
            crate::service::DEFAULT_MAX_UNVERIFIED_PENDING,
            1..=1_000_000,
            "a number of machines",
        )?;
        let ek_chain = crate::ekchain::EkChainConfig::from_lookup(&get)?;
        let pcr_policy_file = get("ITL_PCR_POLICY_FILE").map(PathBuf::from);
        let enrollment_ca_dir = get("ITL_ENROLLMENT_CA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("enrollment-ca"));
        let enrollment_cert_days = match get("ITL_ENROLLMENT_CERT_DAYS") {
            None => 30,
            Some(v) => v
                .parse()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| ConfigError {
                    variable: "ITL_ENROLLMENT_CERT_DAYS",
                    message: format!("'{v}' is not a number of days from 1 to 3650"),
                })?,
        };
        let http_url = |variable: &'static str, v: String| {
            let v = v.trim_end_matches('/').to_owned();
            let ok = (v.starts_with("http://") || v.starts_with("https://"))
                && v.len() <= 200
                && v.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
            if ok {
                Ok(v)
            } else {
                Err(ConfigError {
                    variable,
                    message: format!("'{v}' is not an http(s) URL (at most 200 characters)"),
                })
            }
        };
        // As the seed: the public Image Factory unless `ITL_FACTORY_URL` names another (or is
        // set empty: no ISO URLs), `ITL_ISO_URL` fixing one URL for every machine.
        let factory = match get("ITL_FACTORY_URL") {
            None => Some(DEFAULT_FACTORY_URL.to_owned()),
            Some(url) if url.trim().is_empty() => None,
            Some(url) => Some(url),
        };
        let iso = match (get("ITL_ISO_URL").filter(|u| !u.trim().is_empty()), factory) {
            (Some(fixed), _) => Some(IsoSource::Fixed(http_url("ITL_ISO_URL", fixed)?)),
            (None, Some(url)) => {
                let url = http_url("ITL_FACTORY_URL", url)?;
                let talos_version =
                    get("ITL_TALOS_VERSION").unwrap_or_else(|| DEFAULT_TALOS_VERSION.into());
                let version_ok = talos_version.strip_prefix('v').is_some_and(|r| {
                    let parts: Vec<&str> = r.split('.').collect();
                    parts.len() == 3
                        && parts
                            .iter()
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                });
                if !version_ok {
                    return Err(ConfigError {
                        variable: "ITL_TALOS_VERSION",
                        message: format!("'{talos_version}' is not a Talos version like v1.9.5"),
                    });
                }
                let extensions: Vec<String> = get("ITL_FACTORY_EXTENSIONS")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = extensions.iter().find(|e| {
                    e.len() > 100
                        || !e.contains('/')
                        || !e.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.')
                        })
                }) {
                    return Err(ConfigError {
                        variable: "ITL_FACTORY_EXTENSIONS",
                        message: format!(
                            "'{bad}' is not an extension name like siderolabs/intel-ucode"
                        ),
                    });
                }
                let timeout = match get("ITL_FACTORY_TIMEOUT_SECONDS") {
                    None => 10,
                    Some(v) => v
                        .parse()
                        .ok()
                        .filter(|s| (1..=120).contains(s))
                        .ok_or_else(|| ConfigError {
                            variable: "ITL_FACTORY_TIMEOUT_SECONDS",
                            message: format!("'{v}' is not a number of seconds from 1 to 120"),
                        })?,
                };
                Some(IsoSource::Factory {
                    url,
                    talos_version,
                    extensions,
                    timeout: std::time::Duration::from_secs(timeout),
                })
            }
            (None, None) => None,
        };
        // As the seed: `ITL_OIDC_ISSUER` alone turns operator login on; `ITL_OIDC_ENABLED=false`
        // turns it off (local development with `ITL_ADMIN_TOKEN`).
        let issuer_set = get("ITL_OIDC_ISSUER").is_some_and(|v| !v.is_empty());
        let oidc = match get("ITL_OIDC_ENABLED").as_deref() {
            Some("false" | "0") => None,
            None | Some("") if !issuer_set => None,
            None | Some("" | "true" | "1") => {
                let required = |variable: &'static str| {
                    get(variable)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| ConfigError {
                            variable,
                            message: "required when ITL_OIDC_ENABLED=true".into(),
                        })
                };
                let issuer = required("ITL_OIDC_ISSUER")?;
                if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                    return Err(ConfigError {
                        variable: "ITL_OIDC_ISSUER",
                        message: format!("'{issuer}' is not an http(s) URL"),
                    });
                }
                Some(OidcConfig {
                    issuer,
                    audience: get("ITL_OIDC_AUDIENCE").filter(|a| !a.is_empty()),
                    client_id: get("ITL_OIDC_CLIENT_ID")
                        .filter(|c| !c.is_empty())
                        .unwrap_or_else(|| crate::oidc::DEFAULT_CLIENT_ID.into()),
                    operator_role: get("ITL_OIDC_OPERATOR_ROLE")
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "attestation-operator".into()),
                })
            }
            Some(other) => {
                return Err(ConfigError {
                    variable: "ITL_OIDC_ENABLED",
                    message: format!("'{other}' is neither true nor false"),
                });
            }
        };
        let tls = crate::tls::TlsSettings::from_lookup(&get)?;
        let high_assurance = tls
            .as_ref()
            .is_some_and(|t| t.policy == crate::tls::TlsPolicy::HighAssurance);
        let ak_policy = AkPolicy::parse(get("ITL_AK_ALGORITHMS").as_deref(), high_assurance)
            .map_err(|message| ConfigError {
                variable: "ITL_AK_ALGORITHMS",
                message,
            })?;
        let trusted_proxies = match get("ITL_TRUSTED_PROXIES") {
            None => crate::proxies::TrustedProxies::default(),
            Some(v) => {
                crate::proxies::TrustedProxies::parse(&v).map_err(|message| ConfigError {
                    variable: "ITL_TRUSTED_PROXIES",
                    message,
                })?
            }
        };
        let ca_file = get("ITL_CA_FILE")
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from);
        let audit_checkpoints = AuditCheckpoints {
            entries: number(
                get("ITL_AUDIT_CHECKPOINT_ENTRIES"),
                "ITL_AUDIT_CHECKPOINT_ENTRIES",
                AuditCheckpoints::default().entries,
                1..=1_000_000,
                "a number of audit entries",
            )?,
            minutes: number(
                get("ITL_AUDIT_CHECKPOINT_MINUTES"),
                "ITL_AUDIT_CHECKPOINT_MINUTES",
                AuditCheckpoints::default().minutes,
                1..=1440,
                "a number of minutes",
            )?,
        };
        Ok(Config {
            listen,
            data_dir,
            service_url,
            config_dir,
            admin_token,
            max_body_bytes,
            max_connections,
            max_connections_per_peer,
            idle_timeout,
            dual_control: DualControl {
                roles,
                quorum,
                window_seconds,
                break_glass_counts,
            },
            challenges: Challenges {
                lifetime_seconds,
                pcr_selection,
                interval_seconds,
                liveness_factor,
            },
            config_url_seconds,
            max_unverified_pending,
            ek_chain,
            oidc,
            pcr_policy_file,
            enrollment_ca_dir,
            enrollment_cert_days,
            iso,
            tls,
            trusted_proxies,
            ca_file,
            audit_checkpoints,
            ak_policy,
        })
    }

    /// The redb file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("attestation.redb")
    }

    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// A whole number in `range` from a variable's value (`default` when unset).
fn number<T>(
    value: Option<String>,
    variable: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(v) = value else {
        return Ok(default);
    };
    v.trim()
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ConfigError {
            variable,
            message: format!(
                "'{v}' is not {what} from {} to {}",
                range.start(),
                range.end()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        let e =
            Config::from_lookup(|k| (k == "ITL_LISTEN").then(|| "localhost".into())).unwrap_err();
        assert_eq!(e.variable, "ITL_LISTEN");
        assert!(e.to_string().starts_with("ITL_LISTEN: 'localhost'"), "{e}");
        assert!(c.tls.is_none() && c.trusted_proxies.is_empty() && c.ca_file.is_none());
        let e = Config::from_lookup(|k| (k == "ITL_TRUSTED_PROXIES").then(|| "10.0.0.300".into()))
            .unwrap_err();
        assert_eq!(e.variable, "ITL_TRUSTED_PROXIES");
        let e =
            Config::from_lookup(|k| (k == "ITL_TLS_CERT").then(|| "/c.pem".into())).unwrap_err();
        assert_eq!(e.variable, "ITL_TLS_KEY");
    }

    #[test]
    fn iso_urls_come_from_the_public_factory_unless_told_otherwise() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert!(
            matches!(&c.iso, Some(IsoSource::Factory { url, .. }) if url == DEFAULT_FACTORY_URL),
            "{:?}",
            c.iso
        );
        let off = Config::from_lookup(|k| (k == "ITL_FACTORY_URL").then(String::new)).unwrap();
        assert_eq!(off.iso, None);
        let mine =
            Config::from_lookup(|k| (k == "ITL_FACTORY_URL").then(|| "http://127.0.0.1:9/".into()))
                .unwrap();
        assert!(
            matches!(&mine.iso, Some(IsoSource::Factory { url, .. }) if url.starts_with("http://127.0.0.1:9"))
        );
        let fixed = Config::from_lookup(|k| {
            (k == "ITL_ISO_URL").then(|| "https://example.net/talos.iso".into())
        })
        .unwrap();
        assert_eq!(
            fixed.iso,
            Some(IsoSource::Fixed("https://example.net/talos.iso".into()))
        );
    }

    #[test]
    fn audit_checkpoint_intervals() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.audit_checkpoints, AuditCheckpoints::default());
        assert_eq!(
            (c.audit_checkpoints.entries, c.audit_checkpoints.minutes),
            (1000, 60)
        );
        let with = |k: &'static str, v: &'static str| {
            Config::from_lookup(move |key| (key == k).then(|| v.to_owned()))
        };
        let c = with("ITL_AUDIT_CHECKPOINT_ENTRIES", "5").unwrap();
        assert_eq!(c.audit_checkpoints.entries, 5);
        let c = with("ITL_AUDIT_CHECKPOINT_MINUTES", "1440").unwrap();
        assert_eq!(c.audit_checkpoints.minutes, 1440);
        for (k, v, message) in [
            (
                "ITL_AUDIT_CHECKPOINT_ENTRIES",
                "0",
                "ITL_AUDIT_CHECKPOINT_ENTRIES: '0' is not a number of audit entries from 1 to 1000000",
            ),
            (
                "ITL_AUDIT_CHECKPOINT_ENTRIES",
                "1000001",
                "ITL_AUDIT_CHECKPOINT_ENTRIES: '1000001' is not a number of audit entries from 1 to 1000000",
            ),
            (
                "ITL_AUDIT_CHECKPOINT_MINUTES",
                "0",
                "ITL_AUDIT_CHECKPOINT_MINUTES: '0' is not a number of minutes from 1 to 1440",
            ),
            (
                "ITL_AUDIT_CHECKPOINT_MINUTES",
                "hourly",
                "ITL_AUDIT_CHECKPOINT_MINUTES: 'hourly' is not a number of minutes from 1 to 1440",
            ),
        ] {
            assert_eq!(with(k, v).unwrap_err().to_string(), message);
        }
    }
}
