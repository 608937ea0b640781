//! RS256/ES256 user tokens verified with keys the api fetches from a JWKS endpoint — a real
//! HTTP server this test runs, signing with the test keys in `tests/fixtures/jwt/`.

mod api_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_support::*;
use axum::Json;
use axum::routing::get;
use e2e::jwt::{MintToken, UserClaims};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const RS256_A: &[u8] = include_bytes!("../fixtures/jwt/rs256-a.pem");
const RS256_B: &[u8] = include_bytes!("../fixtures/jwt/rs256-b.pem");
const ES256: &[u8] = include_bytes!("../fixtures/jwt/es256.pem");
const ISSUER: &str = "https://idp.e2e.test";
const AUDIENCE: &str = "gcal-api";

/// A JWKS endpoint whose key set the test changes, counting how often it is fetched.
struct Jwks {
    url: String,
    keys: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Jwks {
    async fn serve(keys: Vec<Jwk>) -> Self {
        let set = Arc::new(Mutex::new(JwkSet { keys }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (set.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Json(served.lock().expect("keys").clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            keys: set,
            fetches,
            task,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn add(&self, jwk: Jwk) {
        self.keys.lock().expect("keys").keys.push(jwk);
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A signing key and its public JWK under `kid`.
fn key(pem: &[u8], algorithm: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
    let encoding = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .expect("fixture key");
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    (encoding, jwk)
}

fn idp_claims() -> UserClaims {
    let mut claims = claims(SUBACCOUNT);
    claims.iss = Some(ISSUER.into());
    claims.aud = Some(service_kit::auth::Audience::One(AUDIENCE.into()));
    claims
}

fn sign(claims: &UserClaims, algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn settings<'a>(
    algorithm: &'a str,
    jwks: &'a Jwks,
    min_refresh: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("JWT_ALGORITHM", algorithm),
        ("JWT_JWKS_URL", jwks.url.as_str()),
        ("JWT_JWKS_MIN_REFRESH_INTERVAL", min_refresh),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
    ]
}

fn list() -> String {
    format!("/api/connectors/{SUBACCOUNT}")
}

#[tokio::test]
async fn rs256_tokens_verify_against_the_jwks_and_a_rotated_in_key_is_fetched() {
    let (key_a, jwk_a) = key(RS256_A, Algorithm::RS256, "key-a");
    let (key_b, jwk_b) = key(RS256_B, Algorithm::RS256, "key-b");
    let jwks = Jwks::serve(vec![jwk_a]).await;
    let api = Api::start(&settings("RS256", &jwks, "300ms")).await;
    let claims = idp_claims();

    let token_a = sign(&claims, Algorithm::RS256, Some("key-a"), &key_a);
    let reply = api.get(&list(), Some(&token_a)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(api.get(&list(), Some(&token_a)).await.status, 200);
    assert_eq!(jwks.fetches(), 1, "keys are cached");

    // The provider rotates a new key in; the first token naming it makes the api re-fetch.
    jwks.add(jwk_b);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let token_b = sign(&claims, Algorithm::RS256, Some("key-b"), &key_b);
    let reply = api.get(&list(), Some(&token_b)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(jwks.fetches(), 2);

    // A token signed by one key but naming the other does not verify.
    let lying = sign(&claims, Algorithm::RS256, Some("key-a"), &key_b);
    api.get(&list(), Some(&lying))
        .await
        .assert_error(401, "invalid_token");

    // The algorithm is pinned: an HS256 token (say, "signed" with the public key) is refused
    // whatever its signature, and so is the development secret.
    let confused = claims.sign_hs256(b"-----BEGIN PUBLIC KEY----- any bytes at all");
    let reply = api.get(&list(), Some(&confused)).await;
    reply.assert_error(401, "invalid_token");
    assert!(reply.message().contains("only RS256"), "{}", reply.body);

    // iss and aud are checked because they are configured.
    let mut other_issuer = idp_claims();
    other_issuer.iss = Some("https://evil.test".into());
    api.get(
        &list(),
        Some(&sign(
            &other_issuer,
            Algorithm::RS256,
            Some("key-a"),
            &key_a,
        )),
    )
    .await
    .assert_error(401, "invalid_token");
    let mut no_audience = idp_claims();
    no_audience.aud = None;
    let reply = api
        .get(
            &list(),
            Some(&sign(&no_audience, Algorithm::RS256, Some("key-a"), &key_a)),
        )
        .await;
    reply.assert_error(401, "invalid_token");
    assert!(reply.message().contains("aud"), "{}", reply.body);

    // Several keys in the set: a token must say which one signed it.
    api.get(
        &list(),
        Some(&sign(&claims, Algorithm::RS256, None, &key_a)),
    )
    .await
    .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn unknown_kids_cannot_make_the_api_hammer_the_jwks_endpoint() {
    let (key_a, jwk_a) = key(RS256_A, Algorithm::RS256, "key-a");
    let jwks = Jwks::serve(vec![jwk_a]).await;
    let api = Api::start(&settings("RS256", &jwks, "4s")).await;
    let claims = idp_claims();
    let good = sign(&claims, Algorithm::RS256, Some("key-a"), &key_a);
    assert_eq!(api.get(&list(), Some(&good)).await.status, 200);
    assert_eq!(jwks.fetches(), 1);

    // Inside the interval, made-up kids cost the provider nothing. (4 s: the 20 requests must
    // fit inside it even on a loaded 2-core machine.)
    let bogus = |i: usize| {
        sign(
            &claims,
            Algorithm::RS256,
            Some(&format!("bogus-{i}")),
            &key_a,
        )
    };
    let replies = futures::future::join_all((0..20).map(|i| {
        let token = bogus(i);
        let api = &api;
        async move { api.get(&list(), Some(&token)).await }
    }))
    .await;
    for reply in &replies {
        reply.assert_error(401, "invalid_token");
    }
    assert_eq!(jwks.fetches(), 1, "no fetch inside the minimum interval");

    // After it, a flood of 40 concurrent made-up kids causes exactly one fetch.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let replies = futures::future::join_all((100..140).map(|i| {
        let token = bogus(i);
        let api = &api;
        async move { api.get(&list(), Some(&token)).await }
    }))
    .await;
    for reply in &replies {
        reply.assert_error(401, "invalid_token");
    }
    assert_eq!(jwks.fetches(), 2, "one fetch for the whole flood");
    assert_eq!(
        api.get(&list(), Some(&good)).await.status,
        200,
        "good tokens still pass"
    );
}

#[tokio::test]
async fn es256_tokens_verify_against_the_jwks_and_rs256_ones_do_not() {
    let (es_key, es_jwk) = key(ES256, Algorithm::ES256, "ec-1");
    let (rs_key, rs_jwk) = key(RS256_A, Algorithm::RS256, "rsa-1");
    // The provider publishes both; the api uses only the keys for its pinned algorithm.
    let jwks = Jwks::serve(vec![es_jwk, rs_jwk]).await;
    let api = Api::start(&settings("ES256", &jwks, "30s")).await;
    let claims = idp_claims();

    let reply = api
        .get(
            &list(),
            Some(&sign(&claims, Algorithm::ES256, Some("ec-1"), &es_key)),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    api.get(
        &list(),
        Some(&sign(&claims, Algorithm::RS256, Some("rsa-1"), &rs_key)),
    )
    .await
    .assert_error(401, "invalid_token");
    // The only ES256 key also verifies a token without a kid.
    assert_eq!(
        api.get(
            &list(),
            Some(&sign(&claims, Algorithm::ES256, None, &es_key))
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn an_unreachable_jwks_endpoint_is_a_503_not_a_401() {
    let (key_a, _) = key(RS256_A, Algorithm::RS256, "key-a");
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{closed}/.well-known/jwks.json");
    let api = Api::start(&[("JWT_ALGORITHM", "RS256"), ("JWT_JWKS_URL", url.as_str())]).await;
    let mut claims = claims(SUBACCOUNT);
    claims.aud = Some(service_kit::auth::Audience::One("anything".into()));

    let reply = api
        .get(
            &list(),
            Some(&sign(&claims, Algorithm::RS256, Some("key-a"), &key_a)),
        )
        .await;

    reply.assert_error(503, "auth_unavailable");
    assert!(reply.headers.get("www-authenticate").is_none());
}
