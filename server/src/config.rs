//! Server configuration from `ITL_*` environment variables.
//!
//! A bad value stops start-up with a message that names the variable; nothing falls back
//! silently to a default when a value was given.

use std::net::SocketAddr;

/// Default listen address: loopback only. Exposing the server is a deliberate choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `ITL_LISTEN`: address and port to listen on.
    pub listen: SocketAddr,
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
        Ok(Config { listen })
    }

    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
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
    }
}
