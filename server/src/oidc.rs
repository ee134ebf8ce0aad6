//! Operator authentication with OIDC bearer tokens (DESIGN.md §5).
//!
//! The JWKS comes from the issuer's discovery document, is cached, and is fetched again when
//! a token names a key we do not know (at most every [`REFRESH_INTERVAL`]). The accepted
//! algorithms are pinned to the key's type — RSA keys take RS*/PS*, EC keys the ES* of their
//! curve — so `alg: none` and HS256 "signed" with a public key never verify. `iss`, `aud`,
//! `exp` and `nbf` are checked; the operator role must be in `realm_access.roles` or
//! `resource_access.<audience>.roles`; the identity is `preferred_username`, else `sub`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Least time between two JWKS fetches triggered by unknown key ids.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The Keycloak client operators log in with, as the seed names it.
pub const DEFAULT_CLIENT_ID: &str = "attestation-service";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// `ITL_OIDC_ISSUER`.
    pub issuer: String,
    /// `ITL_OIDC_AUDIENCE`: when set, the token's `aud` must name it (strict; Keycloak puts
    /// a client there only with an "Audience" mapper). Unset: the token must be for
    /// `client_id`, in `aud` or as its authorized party (`azp`), which is what a Keycloak
    /// access token for that client carries without any mapper.
    pub audience: Option<String>,
    /// `ITL_OIDC_CLIENT_ID` (default `attestation-service`): the client whose roles
    /// (`resource_access.<client>.roles`) count, and the token's party when no audience is set.
    pub client_id: String,
    /// `ITL_OIDC_OPERATOR_ROLE`.
    pub operator_role: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 401: not a valid token for this issuer and audience.
    Invalid(String),
    /// 403: a valid token without the operator role.
    MissingRole { identity: String, role: String },
    /// 503: the provider (discovery or JWKS) cannot be reached.
    ProviderDown(String),
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// For people and the audit log: `preferred_username`, else `sub`.
    pub identity: String,
    /// Who it is for dual control: the issuer and subject (`iss`, `sub`), which a user
    /// cannot choose (`preferred_username` can change, or be absent on one token and present
    /// on the next).
    pub principal: String,
}

struct Keys {
    jwks: JwkSet,
    fetched: Instant,
}

pub struct Oidc {
    config: OidcConfig,
    keys: Mutex<Option<Keys>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    /// A string or an array of strings.
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    azp: Option<String>,
    preferred_username: Option<String>,
    #[serde(default)]
    realm_access: Option<Roles>,
    #[serde(default)]
    resource_access: Option<std::collections::HashMap<String, Roles>>,
}

#[derive(Deserialize)]
struct Roles {
    #[serde(default)]
    roles: Vec<String>,
}

fn agent() -> ureq::Agent {
    crate::outbound::agent(Duration::from_secs(5))
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        Oidc {
            config,
            keys: Mutex::new(None),
        }
    }

    fn fetch_jwks(&self) -> Result<JwkSet, AuthError> {
        let down = |what: &str, e: String| AuthError::ProviderDown(format!("{what}: {e}"));
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = agent()
            .get(&url)
            .call()
            .map_err(|e| down(&url, e.to_string()))?
            .body_mut()
            .read_json()
            .map_err(|e| down(&url, e.to_string()))?;
        if discovery.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(AuthError::ProviderDown(format!(
                "discovery document names issuer {} instead of {}",
                discovery.issuer, self.config.issuer
            )));
        }
        agent()
            .get(&discovery.jwks_uri)
            .call()
            .map_err(|e| down(&discovery.jwks_uri, e.to_string()))?
            .body_mut()
            .read_json()
            .map_err(|e| down(&discovery.jwks_uri, e.to_string()))
    }

    /// The key for `kid`, refreshing the JWKS when it is unknown.
    fn key_for(&self, kid: &str) -> Result<jsonwebtoken::jwk::Jwk, AuthError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.as_ref().and_then(|k| k.jwks.find(kid)) {
            return Ok(k.clone());
        }
        let may_refresh = keys
            .as_ref()
            .is_none_or(|k| k.fetched.elapsed() >= REFRESH_INTERVAL);
        if may_refresh {
            *keys = Some(Keys {
                jwks: self.fetch_jwks()?,
                fetched: Instant::now(),
            });
        }
        keys.as_ref()
            .and_then(|k| k.jwks.find(kid))
            .cloned()
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "the token's key '{kid}' is not in the issuer's JWKS"
                ))
            })
    }

    /// Verifies a bearer token and checks the operator role.
    pub fn authenticate(&self, token: &str) -> Result<Operator, AuthError> {
        let invalid = |e: String| AuthError::Invalid(e);
        let header = decode_header(token).map_err(|e| invalid(format!("malformed token: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token names no key (kid)".into()))?;
        let jwk = self.key_for(&kid)?;
        let allowed: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err(invalid("unsupported EC curve in the JWKS".into())),
            },
            _ => return Err(invalid("the JWKS key is neither RSA nor EC".into())),
        };
        if !allowed.contains(&header.alg) {
            return Err(invalid(format!(
                "algorithm {:?} is not allowed for this key",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(format!("JWKS key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        match &self.config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = decode::<Claims>(token, &key, &validation)
            .map_err(|e| invalid(format!("token rejected: {e}")))?;
        let claims = data.claims;
        if self.config.audience.is_none() {
            let client = self.config.client_id.as_str();
            let in_aud = match &claims.aud {
                Some(serde_json::Value::String(a)) => a == client,
                Some(serde_json::Value::Array(all)) => all.iter().any(|a| a == client),
                _ => false,
            };
            if !(in_aud || claims.azp.as_deref() == Some(client)) {
                return Err(invalid(format!(
                    "token rejected: it is not for client {client} (neither its aud nor its \
                     azp; ITL_OIDC_CLIENT_ID)"
                )));
            }
        }
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the token has no sub".into()))?;
        let identity = match claims.preferred_username.filter(|n| !n.is_empty()) {
            // Names the server uses for itself and for machines are not an operator's.
            Some(name)
                if name.eq_ignore_ascii_case("SYSTEM") || name.eq_ignore_ascii_case("agent") =>
            {
                format!("oidc:{sub}")
            }
            Some(name) => name,
            None => sub.clone(),
        };
        let principal = format!("{}#{sub}", self.config.issuer.trim_end_matches('/'));
        let role = &self.config.operator_role;
        let in_realm = claims
            .realm_access
            .as_ref()
            .is_some_and(|r| r.roles.iter().any(|x| x == role));
        let in_client = claims
            .resource_access
            .as_ref()
            .and_then(|m| {
                m.get(
                    self.config
                        .audience
                        .as_deref()
                        .unwrap_or(&self.config.client_id),
                )
                .or_else(|| m.get(&self.config.client_id))
            })
            .is_some_and(|r| r.roles.iter().any(|x| x == role));
        if !(in_realm || in_client) {
            return Err(AuthError::MissingRole {
                identity,
                role: role.clone(),
            });
        }
        Ok(Operator {
            identity,
            principal,
        })
    }
}
