//! Public keys from the identity provider's JWKS endpoint: fetched lazily, cached for
//! `JWT_JWKS_CACHE_TTL`, fetched again when a token names a `kid` we do not know (key
//! rotation) — but at most once per `JWT_JWKS_MIN_REFRESH_INTERVAL`, and by one request at a
//! time, so a flood of tokens with made-up `kid`s costs the provider one request per interval.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

/// A JWKS document larger than this is refused: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// One fetch may take this long; the request waiting on it is bounded by it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyLookupError {
    /// The key set (fresh, or just re-fetched) has no usable key with this id.
    UnknownKey,
    /// The token has no `kid` and the key set has several keys (or none).
    KidRequired,
    /// No key set could be fetched. The token may be fine: this is the provider's problem.
    Unavailable(String),
}

/// The usable keys of one fetch.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// The only usable key, when there is exactly one (accepts tokens without `kid`).
    single: Option<DecodingKey>,
    fetched_at: Option<Instant>,
}

/// When the endpoint was last asked, and how that went.
#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

pub(crate) struct JwksCache {
    http: reqwest::Client,
    url: Url,
    algorithm: Algorithm,
    ttl: Duration,
    min_refresh_interval: Duration,
    keys: RwLock<KeySet>,
    /// Held while fetching: concurrent requests that need a fetch wait for the one in flight
    /// and then use its result instead of fetching again.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl JwksCache {
    pub(crate) fn new(
        url: Url,
        algorithm: Algorithm,
        ttl: Duration,
        min_refresh_interval: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(Self {
            http,
            url,
            algorithm,
            ttl,
            min_refresh_interval,
            keys: RwLock::new(KeySet::default()),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    /// The key that verifies a token with this `kid`.
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, KeyLookupError> {
        let (found, fresh) = self.lookup(kid);
        if let (Ok(key), true) = (&found, fresh) {
            return Ok(key.clone());
        }
        // Stale, unknown or never fetched: one (rate-limited) fetch, then look again.
        let fetch_error = self.refresh().await;
        match (self.lookup(kid).0, fetch_error, found) {
            (Ok(key), _, _) => Ok(key),
            // A failed refresh must not lock out tokens whose key we already had.
            (Err(_), Some(_), Ok(stale)) => Ok(stale),
            (Err(_), Some(error), Err(_)) if !self.has_keys() => {
                Err(KeyLookupError::Unavailable(error))
            }
            (Err(lookup), _, _) => Err(lookup),
        }
    }

    /// Looks `kid` up in the current set; also says whether the set is within its TTL.
    fn lookup(&self, kid: Option<&str>) -> (Result<DecodingKey, KeyLookupError>, bool) {
        let keys = match self.keys.read() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        let fresh = keys.fetched_at.is_some_and(|at| at.elapsed() < self.ttl);
        let found = match kid {
            Some(kid) => keys
                .by_kid
                .get(kid)
                .cloned()
                .ok_or(KeyLookupError::UnknownKey),
            None => keys.single.clone().ok_or(KeyLookupError::KidRequired),
        };
        (found, fresh)
    }

    fn has_keys(&self) -> bool {
        match self.keys.read() {
            Ok(keys) => keys.fetched_at.is_some(),
            Err(poisoned) => poisoned.into_inner().fetched_at.is_some(),
        }
    }

    /// Fetches the key set unless one was fetched (or tried) within the minimum interval.
    /// Returns the error of the latest attempt when that attempt failed.
    async fn refresh(&self) -> Option<String> {
        let mut state = self.fetch.lock().await;
        let recently = state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.min_refresh_interval);
        if recently {
            return state.last_error.clone();
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch_once().await {
            Ok(set) => {
                tracing::info!(keys = set.by_kid.len(), "fetched the JWKS key set");
                match self.keys.write() {
                    Ok(mut keys) => *keys = set,
                    Err(poisoned) => *poisoned.into_inner() = set,
                }
                state.last_error = None;
                None
            }
            Err(error) => {
                tracing::warn!(%error, url = %redacted(&self.url), "cannot fetch the JWKS key set");
                state.last_error = Some(error.clone());
                Some(error)
            }
        }
    }

    async fn fetch_once(&self) -> Result<KeySet, String> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("JWKS request failed: {}", without_url(&e)))?;
        if !response.status().is_success() {
            return Err(format!("JWKS endpoint answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("JWKS body could not be read: {}", without_url(&e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "JWKS document is larger than {MAX_JWKS_BYTES} bytes"
                ));
            }
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("JWKS is not a key set: {e}"))?;
        Ok(usable_keys(&set, self.algorithm))
    }
}

/// The keys of `set` that can verify `algorithm` signatures. Keys for other algorithms, for
/// encryption, or of the wrong type are skipped, not errors: providers publish mixed sets.
fn usable_keys(set: &JwkSet, algorithm: Algorithm) -> KeySet {
    let mut usable = Vec::new();
    for jwk in &set.keys {
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg_ok = match jwk.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
            Some(_) => false,
        };
        let type_ok = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
                ec.curve == EllipticCurve::P256
            }
            _ => false,
        };
        if !(alg_ok && type_ok) {
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => usable.push((jwk.common.key_id.clone(), key)),
            Err(e) => {
                tracing::warn!(kid = ?jwk.common.key_id, error = %e, "skipping a JWKS key that does not load")
            }
        }
    }
    let single = match usable.as_slice() {
        [(_, key)] => Some(key.clone()),
        _ => None,
    };
    KeySet {
        by_kid: usable
            .into_iter()
            .filter_map(|(kid, key)| kid.map(|kid| (kid, key)))
            .collect(),
        single,
        fetched_at: Some(Instant::now()),
    }
}

/// The URL without credentials or query (which may carry an API key), for logs.
fn redacted(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

/// reqwest errors print the URL; ours may carry credentials, so print only the kind of error.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "bad response body"
    } else {
        "request error"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(keys: serde_json::Value) -> JwkSet {
        serde_json::from_value(json!({ "keys": keys })).expect("jwks")
    }

    // A real P-256 public key (x, y) and an RSA modulus are enough to load keys.
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn only_keys_for_the_pinned_algorithm_are_kept() {
        let jwks = set(json!([
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-512", "alg": "RS512", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": EC_X, "y": EC_Y},
        ]));
        let rs = usable_keys(&jwks, Algorithm::RS256);
        assert_eq!(rs.by_kid.keys().collect::<Vec<_>>(), ["rsa"]);
        assert!(rs.single.is_some(), "exactly one usable key");
        let es = usable_keys(&jwks, Algorithm::ES256);
        assert_eq!(es.by_kid.keys().collect::<Vec<_>>(), ["ec"]);
    }

    #[test]
    fn several_keys_mean_a_kid_is_required() {
        let jwks = set(json!([
            {"kty": "RSA", "kid": "a", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "b", "n": RSA_N, "e": "AQAB"},
        ]));
        let keys = usable_keys(&jwks, Algorithm::RS256);
        assert_eq!(keys.by_kid.len(), 2);
        assert!(keys.single.is_none());
    }

    #[test]
    fn logged_urls_lose_credentials_and_query() {
        let url = Url::parse("https://user:pw@idp.example/keys?api_key=s3cr3t").expect("url");
        assert_eq!(redacted(&url), "https://idp.example/keys");
    }
}
