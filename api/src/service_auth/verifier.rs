//! Deciding whether a service token is valid, and what it may do: by asking the auth server
//! (answers cached in Redis under the token's SHA-256), or by the static hashed list.
//!
//! In front of Redis and the auth server, each replica keeps the verdicts in process
//! ([`AuthServer::verdicts`], bounded): concurrent verifications of one token share one
//! lookup (single flight: 50 requests with the same unknown token are one auth-server call),
//! and an "invalid" verdict is answered from memory for `SERVICE_TOKEN_NEGATIVE_CACHE_TTL`.
//! A "valid" one is not kept past its lookup: Redis holds it, shared by the replicas. Distinct
//! unknown tokens cannot share anything, so the calls to the auth server are also bounded in
//! number: at most `SERVICE_AUTH_MAX_IN_FLIGHT` outstanding per replica; a verification that
//! cannot get its turn within `SERVICE_AUTH_TIMEOUT` is "unavailable" (503, never cached), so a
//! flood of random tokens slows down with the auth server instead of multiplying its load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use service_kit::{Infrastructure, StartupError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ServiceAuthError;
use super::config::{ServiceAuthConfig, StaticServiceToken};

/// Longer than any real service token; refusing early keeps hostile input cheap and keeps
/// it away from the auth server.
const MAX_TOKEN_BYTES: usize = 4096;
/// A cache operation slower than this is abandoned and the auth server asked instead.
const CACHE_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest `service` name accepted from the auth server.
const MAX_SERVICE_NAME: usize = 128;
/// Verdicts (and lookups in flight) kept in process, per replica: about 100 bytes each, so
/// random tokens cannot grow memory past a few megabytes; the least recently used go first.
const VERDICTS_CAPACITY: u64 = 20_000;

/// Who called, as the token's issuer vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// The calling service (logged with every action it takes).
    pub service: String,
    pub permissions: Vec<String>,
}

/// Validates service tokens as configured. Cheap to clone.
#[derive(Clone)]
pub struct ServiceTokenVerifier(Arc<Mode>);

enum Mode {
    AuthServer(Box<AuthServer>),
    Static(Vec<StaticServiceToken>),
    NotConfigured,
}

struct AuthServer {
    http: reqwest::Client,
    url: reqwest::Url,
    infra: Infrastructure,
    cache_ttl: Duration,
    negative_cache_ttl: Duration,
    /// Verdicts by token hash: one lookup per token at a time, invalid ones remembered.
    verdicts: moka::future::Cache<[u8; 32], Verdict>,
    /// Turns to call the auth server (`SERVICE_AUTH_MAX_IN_FLIGHT`).
    calls: Arc<tokio::sync::Semaphore>,
    /// How long a verification waits for a turn (`SERVICE_AUTH_TIMEOUT`).
    turn_wait: Duration,
}

/// How long an in-process verdict lives: an "invalid" one for the negative TTL, a "valid" one
/// only while its lookup is shared (Redis keeps it for the replicas, and a token revoked at the
/// auth server must not outlive `SERVICE_TOKEN_CACHE_TTL` here because Redis was flushed).
struct VerdictExpiry {
    invalid: Duration,
}

impl moka::Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _token_hash: &[u8; 32],
        verdict: &Verdict,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if verdict.valid {
            Duration::ZERO
        } else {
            self.invalid
        })
    }
}

impl std::fmt::Debug for ServiceTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ServiceTokenVerifier")
            .field(&self.mode_name())
            .finish()
    }
}

/// What the auth server answers, and what the cache stores (the same shape):
/// `{"valid": true, "service": "database-server", "permissions": [...]}` or `{"valid": false}`.
/// Other fields are ignored, so the auth server may say more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Verdict {
    valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    permissions: Vec<String>,
}

impl Verdict {
    const INVALID: Verdict = Verdict {
        valid: false,
        service: None,
        permissions: Vec::new(),
    };

    fn into_identity(self) -> Result<ServiceIdentity, ServiceAuthError> {
        match (self.valid, self.service) {
            (true, Some(service)) => Ok(ServiceIdentity {
                service,
                permissions: self.permissions,
            }),
            _ => Err(ServiceAuthError::Invalid(
                "the auth server does not accept it",
            )),
        }
    }
}

/// The request body sent to the auth server.
#[derive(Serialize)]
struct ValidateRequest<'a> {
    token: &'a str,
}

impl ServiceTokenVerifier {
    pub fn new(config: &ServiceAuthConfig, infra: &Infrastructure) -> Result<Self, StartupError> {
        let mode = match &config.auth_url {
            Some(url) => {
                let http = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    // A redirect would carry the token somewhere else.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| StartupError::Misconfigured {
                        setting: "SERVICE_AUTH_URL",
                        cause: format!("cannot build the HTTP client: {e}"),
                    })?;
                Mode::AuthServer(Box::new(AuthServer {
                    http,
                    url: url.0.clone(),
                    infra: infra.clone(),
                    cache_ttl: config.cache_ttl,
                    negative_cache_ttl: config.negative_cache_ttl,
                    verdicts: moka::future::Cache::builder()
                        .max_capacity(VERDICTS_CAPACITY)
                        .expire_after(VerdictExpiry {
                            invalid: config.negative_cache_ttl,
                        })
                        .build(),
                    calls: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
                    turn_wait: config.timeout,
                }))
            }
            None if !config.static_tokens.0.is_empty() => {
                Mode::Static(config.static_tokens.0.clone())
            }
            None => Mode::NotConfigured,
        };
        Ok(Self(Arc::new(mode)))
    }

    /// `auth-server`, `static-list` or `not-configured`, for the start-up log.
    pub fn mode_name(&self) -> &'static str {
        match *self.0 {
            Mode::AuthServer(_) => "auth-server",
            Mode::Static(_) => "static-list",
            Mode::NotConfigured => "not-configured",
        }
    }

    /// Whether any service token can be accepted at all.
    pub fn is_configured(&self) -> bool {
        !matches!(*self.0, Mode::NotConfigured)
    }

    /// Who `token` belongs to and what it may do.
    pub async fn verify(&self, token: &str) -> Result<ServiceIdentity, ServiceAuthError> {
        if let Mode::NotConfigured = *self.0 {
            return Err(ServiceAuthError::NotConfigured);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ServiceAuthError::Invalid("it is too long"));
        }
        let digest = sha256(token);
        match &*self.0 {
            Mode::AuthServer(server) => server.verify(token, &digest).await,
            Mode::Static(tokens) => verify_static(tokens, &digest),
            Mode::NotConfigured => Err(ServiceAuthError::NotConfigured),
        }
    }
}

/// The SHA-256 of a token: what the static list holds and what the cache key is built from.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Every entry is compared, each in constant time, so the time taken says nothing about how
/// close a guess came.
fn verify_static(
    tokens: &[StaticServiceToken],
    digest: &[u8; 32],
) -> Result<ServiceIdentity, ServiceAuthError> {
    let mut found = None;
    for entry in tokens {
        if bool::from(entry.sha256.ct_eq(digest)) {
            found = Some(entry);
        }
    }
    found
        .map(|entry| ServiceIdentity {
            service: entry.service.clone(),
            permissions: entry.permissions.clone(),
        })
        .ok_or(ServiceAuthError::Invalid(
            "it is not a configured service token",
        ))
}

impl AuthServer {
    async fn verify(
        &self,
        token: &str,
        digest: &[u8; 32],
    ) -> Result<ServiceIdentity, ServiceAuthError> {
        // Concurrent callers with the same token wait for the first one's lookup; an error
        // (unavailable) is shared with them but not kept.
        self.verdicts
            .try_get_with(*digest, self.look_up(token, digest))
            .await
            .map_err(|shared| (*shared).clone())?
            .into_identity()
    }

    /// The verdict from Redis, else from the auth server (then cached in Redis).
    async fn look_up(&self, token: &str, digest: &[u8; 32]) -> Result<Verdict, ServiceAuthError> {
        let key = self.infra.keys.service_token(&hex(digest));
        if let Some(cached) = self.cache_get(&key).await {
            return Ok(cached);
        }
        let Ok(Ok(_turn)) = tokio::time::timeout(self.turn_wait, self.calls.acquire()).await else {
            tracing::warn!(wait = ?self.turn_wait, "service token not verified: every call to the auth server is taken (SERVICE_AUTH_MAX_IN_FLIGHT)");
            return Err(ServiceAuthError::Unavailable);
        };
        let verdict = self.ask(token).await?;
        let ttl = if verdict.valid {
            self.cache_ttl
        } else {
            self.negative_cache_ttl
        };
        self.cache_put(&key, &verdict, ttl).await;
        Ok(verdict)
    }

    /// One validation request. Only a clear answer is a verdict; anything else means the
    /// auth server is unavailable (503), which is never cached.
    async fn ask(&self, token: &str) -> Result<Verdict, ServiceAuthError> {
        let sent = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&ValidateRequest { token })
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                // `without_url`: the URL may carry credentials.
                let error = error.without_url();
                let what = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                tracing::warn!(%error, what, "service token not verified: auth server unavailable");
                return Err(ServiceAuthError::Unavailable);
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(error = %error.without_url(), %status, "service token not verified: the auth server's answer could not be read");
                return Err(ServiceAuthError::Unavailable);
            }
        };
        interpret(status, &body)
    }

    async fn cache_get(&self, key: &str) -> Option<Verdict> {
        let mut redis = self.infra.redis.clone();
        match tokio::time::timeout(CACHE_TIMEOUT, redis.get::<_, Option<String>>(key)).await {
            Ok(Ok(Some(text))) => match serde_json::from_str::<Verdict>(&text) {
                Ok(verdict) => Some(verdict),
                Err(error) => {
                    tracing::warn!(%error, "unreadable service-token cache entry ignored");
                    None
                }
            },
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::warn!(%error, "service-token cache read failed; asking the auth server");
                None
            }
            Err(_) => {
                tracing::warn!("service-token cache read timed out; asking the auth server");
                None
            }
        }
    }

    async fn cache_put(&self, key: &str, verdict: &Verdict, ttl: Duration) {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return;
        }
        let text = match serde_json::to_string(verdict) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(%error, "service-token verdict not serializable; not cached");
                return;
            }
        };
        let mut redis = self.infra.redis.clone();
        match tokio::time::timeout(CACHE_TIMEOUT, redis.pset_ex::<_, _, ()>(key, text, millis))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "service-token cache write failed; not cached")
            }
            Err(_) => tracing::warn!("service-token cache write timed out; not cached"),
        }
    }
}

/// What the auth server's answer means (see the module docs for the contract).
fn interpret(status: StatusCode, body: &[u8]) -> Result<Verdict, ServiceAuthError> {
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Ok(Verdict::INVALID),
        other => {
            tracing::warn!(status = %other, "service token not verified: the auth server answered with an unexpected status");
            return Err(ServiceAuthError::Unavailable);
        }
    }
    let verdict: Verdict = serde_json::from_slice(body).map_err(|error| {
        // serde's message may quote the body; the line and column are enough.
        tracing::warn!(
            line = error.line(),
            column = error.column(),
            "service token not verified: the auth server's 200 is not {{\"valid\": bool, ...}}"
        );
        ServiceAuthError::Unavailable
    })?;
    if !verdict.valid {
        return Ok(Verdict::INVALID);
    }
    match verdict.service.as_deref() {
        Some(name) if !name.is_empty() && name.len() <= MAX_SERVICE_NAME => Ok(verdict),
        _ => {
            tracing::warn!(
                "service token not verified: the auth server said valid without a `service` name"
            );
            Err(ServiceAuthError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Verdict, ServiceAuthError> {
        interpret(
            StatusCode::from_u16(status).expect("status"),
            body.as_bytes(),
        )
    }

    #[test]
    fn clear_answers_are_verdicts() {
        let valid = answer(
            200,
            r#"{"valid":true,"service":"database-server","permissions":["a:b"],"extra":1}"#,
        )
        .expect("valid");
        assert_eq!(
            valid.clone().into_identity().expect("identity"),
            ServiceIdentity {
                service: "database-server".into(),
                permissions: vec!["a:b".into()]
            }
        );
        assert_eq!(answer(200, r#"{"valid":false}"#), Ok(Verdict::INVALID));
        assert_eq!(answer(401, "nope"), Ok(Verdict::INVALID));
        assert_eq!(answer(403, ""), Ok(Verdict::INVALID));
    }

    #[test]
    fn everything_else_means_unavailable() {
        for (status, body) in [
            (500, r#"{"valid":true,"service":"x"}"#),
            (503, ""),
            (404, ""),
            (400, r#"{"valid":false}"#),
            (302, ""),
            (200, "not json"),
            (200, r#"{"service":"x"}"#),
            (200, r#"{"valid":"yes"}"#),
            (200, r#"{"valid":true}"#),
            (200, r#"{"valid":true,"service":""}"#),
        ] {
            assert_eq!(
                answer(status, body),
                Err(ServiceAuthError::Unavailable),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn the_cache_stores_the_same_shape() {
        let verdict = Verdict {
            valid: true,
            service: Some("s".into()),
            permissions: vec!["p".into()],
        };
        let text = serde_json::to_string(&verdict).expect("json");
        assert_eq!(text, r#"{"valid":true,"service":"s","permissions":["p"]}"#);
        assert_eq!(
            serde_json::to_string(&Verdict::INVALID).expect("json"),
            r#"{"valid":false}"#
        );
    }

    #[test]
    fn static_tokens_match_by_hash() {
        let tokens = vec![
            StaticServiceToken {
                service: "a".into(),
                sha256: sha256("token-a"),
                permissions: vec!["p".into()],
            },
            StaticServiceToken {
                service: "b".into(),
                sha256: sha256("token-b"),
                permissions: vec!["q".into()],
            },
        ];
        assert_eq!(
            verify_static(&tokens, &sha256("token-b"))
                .expect("b")
                .service,
            "b"
        );
        assert!(verify_static(&tokens, &sha256("token-c")).is_err());
        assert_eq!(
            hex(&sha256("test")),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
