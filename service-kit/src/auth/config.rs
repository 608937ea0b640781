//! The settings of user-token verification.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::{Env, HumanDuration};

/// The HS256 secret used when `JWT_SECRET` is not set, so the system runs with no
/// configuration. It is public (it is in this file): a service using it logs a warning at
/// start-up, and `mint-dev-token` signs with it so people can try the api.
pub const DEV_JWT_SECRET: &str = "gcal-local-development-secret-do-not-use-in-production";

/// The one signing algorithm a deployment accepts. Pinned, because letting the token's header
/// choose is how `alg: none` and RS/HS key-confusion attacks work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with the shared `JWT_SECRET`.
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256, public keys from `JWT_JWKS_URL`.
    Rs256,
    /// ECDSA P-256 SHA-256, public keys from `JWT_JWKS_URL`.
    Es256,
}

impl JwtAlgorithm {
    pub fn as_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    /// Whether keys come from a JWKS endpoint rather than the shared secret.
    pub fn uses_jwks(self) -> bool {
        !matches!(self, Self::Hs256)
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        })
    }
}

impl FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            _ => Err("must be HS256, RS256 or ES256".into()),
        }
    }
}

/// The HS256 shared secret. Never printed; at least 32 bytes, because RFC 7518 §3.2 requires
/// an HMAC key at least as long as the hash output.
#[derive(Clone)]
pub struct JwtSecret(SecretString);

impl JwtSecret {
    pub const MIN_BYTES: usize = 32;

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }

    /// Whether this is the public development default.
    pub fn is_dev_default(&self) -> bool {
        self.0.expose_secret() == DEV_JWT_SECRET
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

impl FromStr for JwtSecret {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() < Self::MIN_BYTES {
            // The length is safe to say; the value is not.
            return Err(format!(
                "must be at least {} bytes for HS256 (RFC 7518 §3.2); it has {}",
                Self::MIN_BYTES,
                raw.len()
            ));
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }
}

/// An `http`/`https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub Url);

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "http" | "https" => Ok(Self(url)),
            _ => Err("must be an http:// or https:// URL".into()),
        }
    }
}

/// How user tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// Used with HS256 only.
    pub secret: JwtSecret,
    /// Used with RS256/ES256 only (and then required).
    pub jwks_url: Option<HttpUrl>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must contain it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long fetched JWKS keys are used before they are fetched again.
    pub jwks_cache_ttl: Duration,
    /// The JWKS endpoint is fetched at most once per this interval, however many tokens with
    /// unknown `kid`s arrive: a flood of made-up key ids cannot hammer the identity provider.
    pub jwks_min_refresh_interval: Duration,
}

impl JwtConfig {
    /// Reads the `JWT_*` settings; problems (including combinations that cannot work) are
    /// recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let algorithm: JwtAlgorithm = env.value(
            "JWT_ALGORITHM",
            "HS256",
            "Signing algorithm user tokens must use: HS256 (with JWT_SECRET), RS256 or ES256 (with JWT_JWKS_URL).",
        );
        let secret: JwtSecret = env.value(
            "JWT_SECRET",
            DEV_JWT_SECRET,
            "HS256 secret (at least 32 bytes) that verifies user tokens. The default is a public development secret: set your own.",
        );
        let jwks_url: Option<HttpUrl> = env.optional(
            "JWT_JWKS_URL",
            "JWKS endpoint of the identity provider, for RS256/ES256 tokens (keys selected by `kid`).",
        );
        let issuer: Option<String> =
            env.optional("JWT_ISSUER", "When set, user tokens must carry this `iss`.");
        let audience: Option<String> = env.optional(
            "JWT_AUDIENCE",
            "When set, user tokens must carry this `aud`.",
        );
        let leeway: Duration = env
            .value::<HumanDuration>(
                "JWT_LEEWAY",
                "30s",
                "Clock skew tolerated when checking a token's `exp` and `nbf`.",
            )
            .into();
        let jwks_cache_ttl: Duration = env
            .value::<HumanDuration>(
                "JWT_JWKS_CACHE_TTL",
                "10m",
                "How long keys fetched from JWT_JWKS_URL are used before being fetched again.",
            )
            .into();
        let jwks_min_refresh_interval: Duration = env
            .value::<HumanDuration>(
                "JWT_JWKS_MIN_REFRESH_INTERVAL",
                "30s",
                "Least time between two fetches of JWT_JWKS_URL (a token with an unknown `kid` triggers one).",
            )
            .into();
        if algorithm.uses_jwks() && jwks_url.is_none() {
            env.problem(
                "JWT_JWKS_URL",
                format!("is required when JWT_ALGORITHM is {algorithm}"),
            );
        }
        if !algorithm.uses_jwks() && jwks_url.is_some() {
            env.problem(
                "JWT_JWKS_URL",
                "is only used with JWT_ALGORITHM=RS256 or ES256; HS256 tokens are verified with JWT_SECRET",
            );
        }
        if leeway > Duration::from_secs(300) {
            env.problem(
                "JWT_LEEWAY",
                "must be at most 5m: a larger leeway defeats `exp`",
            );
        }
        Self {
            algorithm,
            secret,
            jwks_url,
            issuer,
            audience,
            leeway,
            jwks_cache_ttl,
            jwks_min_refresh_interval,
        }
    }

    /// Whether tokens are verified with the public development secret (warn loudly).
    pub fn uses_dev_secret(&self) -> bool {
        self.algorithm == JwtAlgorithm::Hs256 && self.secret.is_dev_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<JwtConfig, crate::config::ConfigError> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let config = JwtConfig::from_env(&mut env);
        env.finish().map(|()| config)
    }

    #[test]
    fn defaults_use_the_dev_secret_with_hs256() {
        let config = read(&[]).expect("defaults are valid");
        assert_eq!(config.algorithm, JwtAlgorithm::Hs256);
        assert!(config.uses_dev_secret());
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert!(DEV_JWT_SECRET.len() >= JwtSecret::MIN_BYTES);
    }

    #[test]
    fn short_secret_is_refused_without_echoing_it() {
        let err = read(&[("JWT_SECRET", "hunter2")]).expect_err("too short");
        let text = err.to_string();
        assert!(text.contains("JWT_SECRET"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn asymmetric_algorithms_need_a_jwks_url_and_hs256_refuses_one() {
        let err = read(&[("JWT_ALGORITHM", "RS256")]).expect_err("no JWKS");
        assert!(err.to_string().contains("JWT_JWKS_URL"), "{err}");
        let ok = read(&[
            ("JWT_ALGORITHM", "es256"),
            ("JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json"),
        ])
        .expect("valid");
        assert_eq!(ok.algorithm, JwtAlgorithm::Es256);
        assert!(!ok.uses_dev_secret());
        let err =
            read(&[("JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json")]).expect_err("HS256 + JWKS");
        assert!(err.to_string().contains("JWT_JWKS_URL"), "{err}");
    }

    #[test]
    fn bad_values_are_each_named() {
        let err = read(&[
            ("JWT_ALGORITHM", "none"),
            ("JWT_LEEWAY", "1h"),
            ("JWT_JWKS_URL", "ftp://x"),
        ])
        .expect_err("bad");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for name in ["JWT_ALGORITHM", "JWT_LEEWAY", "JWT_JWKS_URL"] {
            assert!(names.contains(&name), "{name} missing: {err}");
        }
    }
}
