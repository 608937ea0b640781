//! Verifying one token: pinned algorithm, key by `kid`, signature, then `exp`/`nbf` (with
//! leeway), `iss` and `aud` when configured.

use std::sync::Arc;

use axum::http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};

use super::UserClaims;
use super::config::{JwtAlgorithm, JwtConfig};
use super::jwks::{JwksCache, KeyLookupError};
use crate::startup::StartupError;

/// What a token whose claims are not the documented shape is told.
const CLAIM_TYPES: &str = "its claims do not have the expected types (sub, iss: strings; subaccountIds, roles, permissions: arrays of strings; exp, nbf, iat: numbers)";

/// Longer than any real user token; refusing early keeps hostile input cheap.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a request is not authenticated. The messages are safe to return to the caller: they say
/// what is wrong, never echo the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Authentication required: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("The Authorization header must be `Bearer <token>`")]
    MalformedHeader,
    #[error("The token has expired")]
    Expired,
    #[error("The token is invalid: {0}")]
    Invalid(String),
    /// The identity provider's keys could not be fetched: the token may well be valid, so this
    /// is a 503, not a 401. The detail is logged, not returned.
    #[error(
        "User tokens cannot be verified right now: the identity provider's keys are unavailable"
    )]
    KeysUnavailable(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The machine-readable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedHeader | Self::Invalid(_) => "invalid_token",
            Self::Expired => "token_expired",
            Self::KeysUnavailable(_) => "auth_unavailable",
        }
    }
}

/// Verifies user tokens as configured. Cheap to clone; clones share the JWKS cache.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    algorithm: JwtAlgorithm,
    keys: Keys,
    validation: Validation,
}

enum Keys {
    Secret(DecodingKey),
    Jwks(Box<JwksCache>),
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.inner.algorithm)
            .field(
                "keys",
                &match self.inner.keys {
                    Keys::Secret(_) => "shared secret",
                    Keys::Jwks(_) => "JWKS",
                },
            )
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<Self, StartupError> {
        let algorithm = config.algorithm.as_jsonwebtoken();
        let keys = match &config.jwks_url {
            Some(url) if config.algorithm.uses_jwks() => {
                let cache = JwksCache::new(
                    url.0.clone(),
                    algorithm,
                    config.jwks_cache_ttl,
                    config.jwks_min_refresh_interval,
                )
                .map_err(|cause| StartupError::Misconfigured {
                    setting: "JWT_JWKS_URL",
                    cause,
                })?;
                Keys::Jwks(Box::new(cache))
            }
            // JwtConfig refuses RS256/ES256 without a JWKS URL; a secret for them would be
            // a key-confusion hole, so never fall back to one.
            _ if config.algorithm.uses_jwks() => {
                return Err(StartupError::Misconfigured {
                    setting: "JWT_JWKS_URL",
                    cause: format!("is required when JWT_ALGORITHM is {}", config.algorithm),
                });
            }
            _ => {
                let key = DecodingKey::from_secret(config.secret.expose()).map_err(|e| {
                    StartupError::Misconfigured {
                        setting: "JWT_SECRET",
                        cause: format!("cannot be used as an HMAC key: {e}"),
                    }
                })?;
                Keys::Secret(key)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience, a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            inner: Arc::new(Inner {
                algorithm: config.algorithm,
                keys,
                validation,
            }),
        })
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.inner.algorithm
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("it is too long".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("it is not a well-formed JWT".into()))?;
        let pinned = self.inner.algorithm;
        if header.alg != pinned.as_jsonwebtoken() {
            return Err(AuthError::Invalid(format!(
                "it is signed with {:?}, and only {pinned} is accepted",
                header.alg
            )));
        }
        let key = match &self.inner.keys {
            Keys::Secret(key) => key.clone(),
            Keys::Jwks(cache) => {
                cache
                    .key_for(header.kid.as_deref())
                    .await
                    .map_err(|e| match e {
                        KeyLookupError::UnknownKey => {
                            AuthError::Invalid("its key id (kid) is not in the key set".into())
                        }
                        KeyLookupError::KidRequired => AuthError::Invalid(
                            "it has no key id (kid), which this key set requires".into(),
                        ),
                        KeyLookupError::Unavailable(detail) => AuthError::KeysUnavailable(detail),
                    })?
            }
        };
        // Decoded as plain JSON first so that the registered claims are validated (and a
        // missing `sub` or `exp` is named) before our own claim types are applied.
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &self.inner.validation)
            .map_err(|e| classify(e.kind()))?
            .claims;
        serde_json::from_value::<UserClaims>(claims).map_err(|_| {
            // serde's message would quote the caller's values, so it is not passed on.
            AuthError::Invalid(CLAIM_TYPES.to_owned())
        })
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    let reason = match kind {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "its signature does not verify".to_owned(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => {
            "it was issued by an issuer this service does not accept (iss)".to_owned()
        }
        ErrorKind::InvalidAudience => "it is meant for another audience (aud)".to_owned(),
        ErrorKind::InvalidAlgorithm => "it is not signed with the accepted algorithm".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the `{claim}` claim is missing"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the `{claim}` claim has the wrong type"),
        ErrorKind::Json(_) => CLAIM_TYPES.to_owned(),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "it is not a well-formed JWT".to_owned()
        }
        other => {
            // Key problems are ours, not the caller's: say so in the log.
            tracing::error!(error = ?other, "a user token could not be checked against the configured key");
            "it could not be verified".to_owned()
        }
    };
    AuthError::Invalid(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";
    const SUB: &str = "68cf05f060d294db17c0685e";

    fn verifier(extra: &[(&str, &str)]) -> JwtVerifier {
        let mut pairs = vec![("JWT_SECRET", SECRET)];
        pairs.extend_from_slice(extra);
        let mut env = Env::from_pairs(pairs);
        let config = JwtConfig::from_env(&mut env);
        env.finish().expect("config");
        JwtVerifier::new(&config).expect("verifier")
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).expect("key"),
        )
        .expect("sign")
    }

    fn good_claims() -> serde_json::Value {
        json!({
            "sub": "user-1", "subaccountIds": [SUB], "permissions": ["connectors:manage"],
            "iat": now(), "nbf": now(), "exp": now() + 600,
        })
    }

    #[tokio::test]
    async fn a_good_token_gives_its_claims() {
        let claims = verifier(&[])
            .verify(&sign(good_claims(), SECRET))
            .await
            .expect("valid");
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.subaccount_ids, [SUB]);
    }

    #[tokio::test]
    async fn wrong_secret_expired_and_premature_tokens_are_refused() {
        let v = verifier(&[]);
        let err = v
            .verify(&sign(
                good_claims(),
                "another-secret-that-is-also-32-bytes-long",
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_token");
        assert!(err.to_string().contains("signature"), "{err}");

        let mut expired = good_claims();
        expired["exp"] = json!(now() - 120);
        assert_eq!(
            v.verify(&sign(expired, SECRET)).await.unwrap_err(),
            AuthError::Expired
        );

        // Inside the leeway (30 s) an expired token still passes; clocks drift.
        let mut just_expired = good_claims();
        just_expired["exp"] = json!(now() - 5);
        assert!(v.verify(&sign(just_expired, SECRET)).await.is_ok());

        let mut premature = good_claims();
        premature["nbf"] = json!(now() + 600);
        let err = v.verify(&sign(premature, SECRET)).await.unwrap_err();
        assert!(err.to_string().contains("nbf"), "{err}");
    }

    #[tokio::test]
    async fn another_algorithm_is_refused_before_the_signature() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &good_claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
        )
        .expect("sign");
        let err = verifier(&[]).verify(&token).await.unwrap_err();
        assert!(err.to_string().contains("only HS256"), "{err}");
        // alg "none" is not even a JWT we parse.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ"
        );
        assert_eq!(
            verifier(&[]).verify(&none).await.unwrap_err().code(),
            "invalid_token"
        );
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_and_required_when_configured() {
        let v = verifier(&[("JWT_ISSUER", "https://auth"), ("JWT_AUDIENCE", "gcal")]);
        let mut ok = good_claims();
        ok["iss"] = json!("https://auth");
        ok["aud"] = json!(["other", "gcal"]);
        assert!(v.verify(&sign(ok.clone(), SECRET)).await.is_ok());

        let mut wrong_iss = ok.clone();
        wrong_iss["iss"] = json!("https://evil");
        assert!(
            v.verify(&sign(wrong_iss, SECRET))
                .await
                .unwrap_err()
                .to_string()
                .contains("iss")
        );
        let mut no_aud = ok.clone();
        no_aud.as_object_mut().expect("object").remove("aud");
        assert!(
            v.verify(&sign(no_aud, SECRET))
                .await
                .unwrap_err()
                .to_string()
                .contains("`aud`")
        );
        // Without JWT_AUDIENCE a token's aud is not judged.
        assert!(verifier(&[]).verify(&sign(ok, SECRET)).await.is_ok());
    }

    #[tokio::test]
    async fn garbage_and_wrongly_typed_claims_never_panic_or_echo() {
        let v = verifier(&[]);
        for garbage in ["", "a", "a.b", "a.b.c", "....", "ey.ey.ey"] {
            assert_eq!(v.verify(garbage).await.unwrap_err().code(), "invalid_token");
        }
        let mut bad = good_claims();
        bad["subaccountIds"] = json!("not-an-array-s3cr3t");
        let err = v.verify(&sign(bad, SECRET)).await.unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let mut no_sub = good_claims();
        no_sub.as_object_mut().expect("object").remove("sub");
        assert!(
            v.verify(&sign(no_sub, SECRET))
                .await
                .unwrap_err()
                .to_string()
                .contains("`sub`")
        );
    }
}
