//! The axum side: the [`AuthenticatedUser`] extractor and how an [`AuthError`] is answered.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::UserClaims;
use super::verifier::{AuthError, JwtVerifier};

/// A request whose bearer token verified. Take it as a handler argument (first, so a request
/// without a valid token is answered 401 before anything else is looked at); the state must
/// provide a [`JwtVerifier`] through `FromRef`.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub UserClaims);

impl std::ops::Deref for AuthenticatedUser {
    type Target = UserClaims;
    fn deref(&self) -> &UserClaims {
        &self.0
    }
}

impl<S> FromRequestParts<S> for AuthenticatedUser
where
    S: Send + Sync,
    JwtVerifier: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = JwtVerifier::from_ref(state);
        let token = bearer_token(parts)?;
        match verifier.verify(token).await {
            Ok(claims) => Ok(Self(claims)),
            Err(error) => {
                // The reason only; the token stays out of the log.
                tracing::debug!(code = error.code(), reason = %error, "user token refused");
                Err(error)
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// The house error body (`{"success": false, "message", "error": {"code", "details"}}`) with
/// the `WWW-Authenticate` challenge of RFC 6750 on a 401.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if let AuthError::KeysUnavailable(detail) = &self {
            tracing::warn!(%detail, "user token not verified: signing keys unavailable");
        }
        let status = self.status();
        let body = json!({
            "success": false,
            "message": self.to_string(),
            "error": { "code": self.code(), "details": null },
        });
        let mut response = (status, Json(body)).into_response();
        let challenge = match self {
            AuthError::MissingToken => Some("Bearer"),
            AuthError::KeysUnavailable(_) => None,
            _ => Some(r#"Bearer error="invalid_token""#),
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut builder = Request::builder().uri("/");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn bearer_tokens_are_found_and_everything_else_refused() {
        assert_eq!(bearer_token(&parts(Some("Bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(&parts(Some("bearer  abc "))), Ok("abc"));
        assert_eq!(
            bearer_token(&parts(None)).unwrap_err(),
            AuthError::MissingToken
        );
        for bad in [
            "Basic dXNlcjpwdw==",
            "Bearer",
            "Bearer ",
            "abc",
            "Bearer a b",
        ] {
            assert_eq!(
                bearer_token(&parts(Some(bad))).unwrap_err(),
                AuthError::MalformedHeader,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_401_carries_the_challenge_and_the_house_body() {
        let response = AuthError::Expired.into_response();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        let response = AuthError::KeysUnavailable("x".into()).into_response();
        assert_eq!(response.status(), 503);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
