//! What the server does with an EK chain verdict, and the `ITL_EK_*` variables.
//!
//! Parsed here rather than in `crate::config` so that this module can be wired in on its own;
//! the functions follow that module's rules: a bad value stops start-up with a
//! [`ConfigError`] naming the variable, and nothing falls back silently to a default when a
//! value was given.

use std::path::PathBuf;
use std::time::Duration;

use super::ChainVerdict;
use crate::config::ConfigError;

/// `ITL_EK_CHAIN`: what an EK certificate that does not chain to the trust store means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EkChainPolicy {
    /// Refuse the registration.
    Strict,
    /// Accept it, show `ek_chain: unverified` to the approver (the default).
    #[default]
    Warn,
    /// Do not check chains.
    Off,
}

impl EkChainPolicy {
    /// `strict`, `warn` or `off`; `None` (unset) is `warn`.
    pub fn parse(value: Option<&str>) -> Result<EkChainPolicy, ConfigError> {
        match value {
            None => Ok(EkChainPolicy::Warn),
            Some("strict") => Ok(EkChainPolicy::Strict),
            Some("warn") => Ok(EkChainPolicy::Warn),
            Some("off") => Ok(EkChainPolicy::Off),
            Some(other) => Err(ConfigError {
                variable: "ITL_EK_CHAIN",
                message: format!("'{other}' is not one of strict, warn, off"),
            }),
        }
    }

    /// Reads `ITL_EK_CHAIN` through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<EkChainPolicy, ConfigError> {
        Self::parse(get("ITL_EK_CHAIN").as_deref())
    }

    /// Whether a registration with this verdict is refused (`strict` and not verified).
    pub fn refuses(self, verdict: &ChainVerdict) -> bool {
        self == EkChainPolicy::Strict && !verdict.is_verified()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EkChainPolicy::Strict => "strict",
            EkChainPolicy::Warn => "warn",
            EkChainPolicy::Off => "off",
        }
    }
}

/// Default time an AIA fetch may take (connecting included).
pub const DEFAULT_AIA_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything EK chain checking is configured by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkChainConfig {
    /// `ITL_EK_CHAIN`.
    pub policy: EkChainPolicy,
    /// `ITL_EK_CA_DIR`: more CA certificates (roots or intermediates), loaded at start.
    pub ca_dir: Option<PathBuf>,
    /// `ITL_EK_AIA_FETCH`: whether a missing issuer may be fetched from its caIssuers URL.
    pub aia_fetch: bool,
    /// Where fetched issuers are kept across restarts (no variable: the caller chooses, e.g.
    /// `ITL_DATA_DIR/ek-aia-cache`); `None`: in memory only.
    pub aia_cache_dir: Option<PathBuf>,
    /// Bound on each AIA fetch.
    pub aia_timeout: Duration,
}

impl Default for EkChainConfig {
    fn default() -> Self {
        EkChainConfig {
            policy: EkChainPolicy::Warn,
            ca_dir: None,
            aia_fetch: false,
            aia_cache_dir: None,
            aia_timeout: DEFAULT_AIA_TIMEOUT,
        }
    }
}

impl EkChainConfig {
    /// Reads `ITL_EK_CHAIN`, `ITL_EK_CA_DIR` and `ITL_EK_AIA_FETCH` through `get` (the
    /// process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<EkChainConfig, ConfigError> {
        let policy = EkChainPolicy::from_lookup(&get)?;
        let ca_dir = get("ITL_EK_CA_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let aia_fetch = match get("ITL_EK_AIA_FETCH").as_deref() {
            None | Some("false" | "0" | "") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(ConfigError {
                    variable: "ITL_EK_AIA_FETCH",
                    message: format!("'{other}' is neither true nor false"),
                });
            }
        };
        Ok(EkChainConfig {
            policy,
            ca_dir,
            aia_fetch,
            ..EkChainConfig::default()
        })
    }

    pub fn from_env() -> Result<EkChainConfig, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn policy_values() {
        assert_eq!(EkChainPolicy::parse(None).unwrap(), EkChainPolicy::Warn);
        for p in [
            EkChainPolicy::Strict,
            EkChainPolicy::Warn,
            EkChainPolicy::Off,
        ] {
            assert_eq!(EkChainPolicy::parse(Some(p.as_str())).unwrap(), p);
        }
        let e = EkChainPolicy::parse(Some("STRICT")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ITL_EK_CHAIN: 'STRICT' is not one of strict, warn, off"
        );
        assert!(EkChainPolicy::parse(Some("")).is_err());
        let unverified = ChainVerdict::Unverified { reason: "x".into() };
        assert!(EkChainPolicy::Strict.refuses(&unverified));
        assert!(!EkChainPolicy::Warn.refuses(&unverified));
        assert!(!EkChainPolicy::Off.refuses(&unverified));
    }

    #[test]
    fn config_from_lookup() {
        assert_eq!(
            EkChainConfig::from_lookup(lookup(&[])).unwrap(),
            EkChainConfig::default()
        );
        let c = EkChainConfig::from_lookup(lookup(&[
            ("ITL_EK_CHAIN", "strict"),
            ("ITL_EK_CA_DIR", "/etc/itl/ek-ca"),
            ("ITL_EK_AIA_FETCH", "true"),
        ]))
        .unwrap();
        assert_eq!(c.policy, EkChainPolicy::Strict);
        assert_eq!(c.ca_dir, Some(PathBuf::from("/etc/itl/ek-ca")));
        assert!(c.aia_fetch);
        let e = EkChainConfig::from_lookup(lookup(&[("ITL_EK_AIA_FETCH", "yes")])).unwrap_err();
        assert_eq!(e.variable, "ITL_EK_AIA_FETCH");
        let e = EkChainConfig::from_lookup(lookup(&[("ITL_EK_CHAIN", "lax")])).unwrap_err();
        assert_eq!(e.variable, "ITL_EK_CHAIN");
    }
}
