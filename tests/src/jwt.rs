//! Mints user JWTs the way the platform's auth server would, for tests that call the api.
//!
//! The claim names are the api's contract for user tokens: `sub`, `subaccountIds` (the
//! subaccounts the user may act on), `roles` (`admin` grants every subaccount), `permissions`
//! (e.g. `connectors:manage`), plus the registered `iss`, `aud`, `iat`, `nbf`, `exp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserClaims {
    pub sub: String,
    #[serde(default)]
    pub subaccount_ids: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

impl UserClaims {
    /// A user allowed to manage connectors of `subaccount`, valid for `ttl` from now.
    pub fn for_subaccount(subaccount: &str, ttl: Duration) -> Self {
        let now = now();
        Self {
            sub: "user-e2e".into(),
            subaccount_ids: vec![subaccount.into()],
            roles: Vec::new(),
            permissions: vec!["connectors:manage".into()],
            iss: None,
            aud: None,
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
        }
    }

    /// Signs with HS256 and a shared secret.
    pub fn sign_hs256(&self, secret: &[u8]) -> String {
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
        claims.exp = claims.iat - 3600;
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
