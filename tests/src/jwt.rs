//! Mints user JWTs the way the platform's auth server would, for tests that call the api.
//!
//! The claims are the api's own type ([`service_kit::auth::UserClaims`], the contract in its
//! module docs), so a test can never mint a shape the verifier does not read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
pub use service_kit::auth::UserClaims;
use service_kit::auth::{INVITE, MANAGE_CONNECTORS};

/// Building and signing [`UserClaims`] in tests.
pub trait MintToken: Sized {
    /// A user allowed to manage connectors of `subaccount` and to email consent links to any
    /// address (as the dev token), valid for `ttl` from now.
    fn for_subaccount(subaccount: &str, ttl: Duration) -> Self;
    /// Signs with HS256 and a shared secret.
    fn sign_hs256(&self, secret: &[u8]) -> String;
}

impl MintToken for UserClaims {
    fn for_subaccount(subaccount: &str, ttl: Duration) -> Self {
        let now = now();
        Self {
            sub: "user-e2e".into(),
            subaccount_ids: vec![subaccount.into()],
            roles: Vec::new(),
            permissions: vec![MANAGE_CONNECTORS.into(), INVITE.into()],
            email: None,
            iss: None,
            aud: None,
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
        }
    }

    fn sign_hs256(&self, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            self,
            &EncodingKey::from_secret(secret).expect("an HMAC key accepts any secret"),
        )
        .expect("claims serialize")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn minted_token_verifies_with_the_same_secret_only() {
        let token = UserClaims::for_subaccount("68cf05f060d294db17c0685e", Duration::from_secs(60))
            .sign_hs256(b"dev-secret");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        let decoded = jsonwebtoken::decode::<UserClaims>(
            &token,
            &DecodingKey::from_secret(b"dev-secret").expect("key"),
            &validation,
        )
        .expect("verifies");
        assert_eq!(decoded.claims.subaccount_ids, ["68cf05f060d294db17c0685e"]);
        assert!(
            jsonwebtoken::decode::<UserClaims>(
                &token,
                &DecodingKey::from_secret(b"other").expect("key"),
                &validation
            )
            .is_err()
        );
    }

    #[test]
    fn expired_token_is_rejected() {
        let mut claims =
            UserClaims::for_subaccount("68cf05f060d294db17c0685e", Duration::from_secs(60));
        claims.exp = claims.iat.expect("iat") - 3600;
        let token = claims.sign_hs256(b"k");
        let validation = Validation::new(Algorithm::HS256);
        assert!(
            jsonwebtoken::decode::<UserClaims>(
                &token,
                &DecodingKey::from_secret(b"k").expect("key"),
                &validation
            )
            .is_err()
        );
    }
}
