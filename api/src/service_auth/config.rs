//! The settings of service-token validation: an auth server (`SERVICE_AUTH_URL`) or a static
//! list of hashed tokens (`SERVICE_TOKENS`), never both.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use service_kit::config::{Env, HumanDuration};

/// An `http`/`https` URL the validation request is POSTed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthServerUrl(pub reqwest::Url);

impl FromStr for AuthServerUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // The URL is not echoed: it may carry credentials.
        let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "http" | "https" if url.has_host() => Ok(Self(url)),
            _ => Err("must be an http:// or https:// URL with a host".into()),
        }
    }
}

/// One entry of `SERVICE_TOKENS`: who the token belongs to, the SHA-256 of the token (never
/// the token itself), and what it may do.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticServiceToken {
    pub service: String,
    pub sha256: [u8; 32],
    pub permissions: Vec<String>,
}

impl fmt::Debug for StaticServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticServiceToken")
            .field("service", &self.service)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

/// `SERVICE_TOKENS`: comma-separated `service:sha256hex:perm1|perm2` entries. A permission may
/// contain `:` (`connectors:metadata:write`): only the first two colons separate fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticServiceTokens(pub Vec<StaticServiceToken>);

impl FromStr for StaticServiceTokens {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut tokens: Vec<StaticServiceToken> = Vec::new();
        for (index, entry) in raw.split(',').map(str::trim).enumerate() {
            let n = index + 1;
            if entry.is_empty() {
                continue;
            }
            let mut fields = entry.splitn(3, ':');
            let (Some(service), Some(hash), Some(permissions)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "entry {n} must be `service:sha256hex:permission|permission`"
                ));
            };
            let service = service.trim();
            let ok_name = (1..=64).contains(&service.len())
                && service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok_name {
                return Err(format!(
                    "entry {n}: the service name must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.'"
                ));
            }
            // Not echoed: someone may have pasted the token itself here.
            let sha256 = parse_sha256_hex(hash.trim()).ok_or_else(|| {
                format!(
                    "entry {n} ({service}): the second field must be the 64 hex characters of the token's SHA-256 (`printf %s \"$TOKEN\" | sha256sum`), not the token"
                )
            })?;
            let permissions: Vec<String> = permissions
                .split('|')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            if permissions.is_empty() {
                return Err(format!(
                    "entry {n} ({service}): list at least one permission, e.g. connectors:metadata:write"
                ));
            }
            if permissions
                .iter()
                .any(|p| p.len() > 128 || p.chars().any(char::is_whitespace))
            {
                return Err(format!(
                    "entry {n} ({service}): permissions are separated by `|` and contain no spaces"
                ));
            }
            if tokens.iter().any(|t| t.sha256 == sha256) {
                return Err(format!(
                    "entry {n} ({service}): the same token hash is listed twice"
                ));
            }
            tokens.push(StaticServiceToken {
                service: service.to_owned(),
                sha256,
                permissions,
            });
        }
        Ok(Self(tokens))
    }
}

fn parse_sha256_hex(raw: &str) -> Option<[u8; 32]> {
    if raw.len() != 64 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0_u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// How service tokens are validated.
#[derive(Debug, Clone)]
pub struct ServiceAuthConfig {
    /// The auth server that decides whether a token is valid; `None` for the static list.
    pub auth_url: Option<AuthServerUrl>,
    /// Bound on one validation request, connection included.
    pub timeout: Duration,
    /// How long a "valid" answer is reused from Redis. Zero: not cached.
    pub cache_ttl: Duration,
    /// How long an "invalid" answer is reused from Redis, so a caller retrying a bad token
    /// does not turn into a flood on the auth server. Zero: not cached.
    pub negative_cache_ttl: Duration,
    /// Calls to the auth server outstanding at once, per api replica: unknown tokens, all
    /// different (a flood of random ones), cannot turn into more than this many calls in
    /// flight. A verification that waits longer than `timeout` for its turn is 503.
    pub max_in_flight: usize,
    /// Used only without an auth server.
    pub static_tokens: StaticServiceTokens,
}

impl ServiceAuthConfig {
    pub fn from_env(env: &mut Env) -> Self {
        let auth_url: Option<AuthServerUrl> = env.optional(
            "SERVICE_AUTH_URL",
            "Auth server that validates service tokens: the api POSTs {\"token\": ...} and expects 200 {\"valid\": true, \"service\", \"permissions\"} (or {\"valid\": false} / 401).",
        );
        let timeout: Duration = env
            .value::<HumanDuration>(
                "SERVICE_AUTH_TIMEOUT",
                "2s",
                "Bound on one call to SERVICE_AUTH_URL; slower counts as the auth server being unavailable (503).",
            )
            .into();
        if !(Duration::from_millis(50)..=Duration::from_secs(30)).contains(&timeout) {
            env.problem("SERVICE_AUTH_TIMEOUT", "must be between 50ms and 30s");
        }
        let cache_ttl: Duration = env
            .value::<HumanDuration>(
                "SERVICE_TOKEN_CACHE_TTL",
                "5m",
                "How long the auth server's \"valid\" answer for a token is cached in Redis (0s: not cached).",
            )
            .into();
        if cache_ttl > Duration::from_secs(3600) {
            env.problem(
                "SERVICE_TOKEN_CACHE_TTL",
                "must be at most 1h: a revoked token stays usable this long",
            );
        }
        let negative_cache_ttl: Duration = env
            .value::<HumanDuration>(
                "SERVICE_TOKEN_NEGATIVE_CACHE_TTL",
                "30s",
                "How long the auth server's \"invalid\" answer for a token is cached in Redis (0s: not cached).",
            )
            .into();
        if negative_cache_ttl > Duration::from_secs(600) {
            env.problem(
                "SERVICE_TOKEN_NEGATIVE_CACHE_TTL",
                "must be at most 10m: a newly issued token is refused this long",
            );
        }
        let max_in_flight: usize = env.value(
            "SERVICE_AUTH_MAX_IN_FLIGHT",
            "16",
            "Calls to SERVICE_AUTH_URL one api replica has outstanding at once (1 to 1024); a token whose verification waits longer than SERVICE_AUTH_TIMEOUT for a free one gets 503 service_auth_unavailable.",
        );
        if !(1..=1024).contains(&max_in_flight) {
            env.problem("SERVICE_AUTH_MAX_IN_FLIGHT", "must be between 1 and 1024");
        }
        let static_tokens: StaticServiceTokens = env
            .optional(
                "SERVICE_TOKENS",
                "Without SERVICE_AUTH_URL: accepted service tokens, comma-separated `service:sha256hex:perm1|perm2` (the SHA-256 of the token, never the token).",
            )
            .unwrap_or_default();
        if auth_url.is_some() && !static_tokens.0.is_empty() {
            env.problem(
                "SERVICE_TOKENS",
                "cannot be combined with SERVICE_AUTH_URL: set one of them",
            );
        }
        Self {
            auth_url,
            timeout,
            cache_ttl,
            negative_cache_ttl,
            max_in_flight,
            static_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn read(pairs: &[(&str, &str)]) -> Result<ServiceAuthConfig, service_kit::config::ConfigError> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let config = ServiceAuthConfig::from_env(&mut env);
        env.finish().map(|()| config)
    }

    #[test]
    fn defaults_configure_neither_mode() {
        let config = read(&[]).expect("defaults");
        assert!(config.auth_url.is_none());
        assert!(config.static_tokens.0.is_empty());
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.cache_ttl, Duration::from_secs(300));
        assert_eq!(config.negative_cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn static_entries_keep_colons_in_permissions() {
        let tokens: StaticServiceTokens = format!(
            "database-server:{HASH}:connectors:metadata:write|connectors:read, other:{}:x",
            HASH.to_uppercase().replace('9', "8")
        )
        .parse()
        .expect("valid");
        assert_eq!(tokens.0.len(), 2);
        assert_eq!(tokens.0[0].service, "database-server");
        assert_eq!(
            tokens.0[0].permissions,
            ["connectors:metadata:write", "connectors:read"]
        );
        assert_eq!(tokens.0[0].sha256[0], 0x9f);
    }

    #[test]
    fn a_pasted_token_is_refused_without_being_echoed() {
        for bad in [
            "svc:my-s3cr3t-token:perm",
            "svc:my-s3cr3t-token",
            "bad name:my-s3cr3t-token:perm",
        ] {
            let err = bad.parse::<StaticServiceTokens>().expect_err(bad);
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        let no_perm = format!("svc:{HASH}:");
        assert!(no_perm.parse::<StaticServiceTokens>().is_err());
        let twice = format!("a:{HASH}:p,b:{HASH}:p");
        assert!(twice.parse::<StaticServiceTokens>().is_err());
    }

    #[test]
    fn both_modes_at_once_and_bad_values_are_named() {
        let entry = format!("svc:{HASH}:p");
        let err = read(&[
            ("SERVICE_AUTH_URL", "http://127.0.0.1:9/validate"),
            ("SERVICE_TOKENS", &entry),
            ("SERVICE_AUTH_TIMEOUT", "1h"),
            ("SERVICE_TOKEN_CACHE_TTL", "1d"),
            ("SERVICE_TOKEN_NEGATIVE_CACHE_TTL", "1h"),
        ])
        .expect_err("bad");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for name in [
            "SERVICE_TOKENS",
            "SERVICE_AUTH_TIMEOUT",
            "SERVICE_TOKEN_CACHE_TTL",
            "SERVICE_TOKEN_NEGATIVE_CACHE_TTL",
        ] {
            assert!(names.contains(&name), "{name} missing from {err}");
        }
        let err = read(&[("SERVICE_AUTH_URL", "ftp://x")]).expect_err("scheme");
        assert!(err.to_string().contains("SERVICE_AUTH_URL"), "{err}");
    }
}
