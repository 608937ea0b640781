//! The axum side: the [`ServiceCaller`] extractor.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};

use super::ServiceAuthError;
use super::verifier::{ServiceIdentity, ServiceTokenVerifier};
use crate::error::ApiError;

/// The header the reference platform's services send their token in.
pub const SERVICE_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-service-token");

/// A request from a service whose token is valid. The state must provide a
/// [`ServiceTokenVerifier`] through `FromRef`.
#[derive(Debug, Clone)]
pub struct ServiceCaller(pub ServiceIdentity);

impl ServiceCaller {
    /// The calling service's name, as the token's issuer vouches for it.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// The route's permission check, performed once the input is valid.
    pub fn require(&self, permission: &'static str) -> Result<(), ServiceAuthError> {
        if self.0.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(ServiceAuthError::Forbidden {
                service: self.0.service.clone(),
                permission,
            })
        }
    }
}

impl<S> FromRequestParts<S> for ServiceCaller
where
    S: Send + Sync,
    ServiceTokenVerifier: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = service_token(&parts.headers)?;
        match ServiceTokenVerifier::from_ref(state).verify(token).await {
            Ok(identity) => Ok(Self(identity)),
            Err(error) => {
                // The reason only; the token stays out of the log.
                tracing::debug!(code = error.code(), reason = %error, "service token refused");
                Err(error.into())
            }
        }
    }
}

/// The token of `X-Service-Token`, or of `Authorization: Bearer` (scheme case-insensitive).
fn service_token(headers: &HeaderMap) -> Result<&str, ServiceAuthError> {
    let malformed = ServiceAuthError::Invalid("the header must carry exactly one token");
    let dedicated = headers
        .get(SERVICE_TOKEN_HEADER)
        .map(|value| {
            let token = value.to_str().map_err(|_| malformed.clone())?.trim();
            if token.is_empty() || token.contains(' ') {
                return Err(malformed.clone());
            }
            Ok(token)
        })
        .transpose()?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty() && !token.contains(' '));
    match (dedicated, bearer) {
        (Some(a), Some(b)) if a != b => Err(ServiceAuthError::Invalid(
            "X-Service-Token and Authorization carry different tokens",
        )),
        (Some(token), _) | (None, Some(token)) => Ok(token),
        (None, None) => Err(ServiceAuthError::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn either_header_carries_the_token() {
        assert_eq!(
            service_token(&headers(&[("x-service-token", " abc ")])),
            Ok("abc")
        );
        assert_eq!(
            service_token(&headers(&[("authorization", "bearer abc")])),
            Ok("abc")
        );
        assert_eq!(
            service_token(&headers(&[
                ("x-service-token", "abc"),
                ("authorization", "Bearer abc")
            ])),
            Ok("abc")
        );
        // A user's Basic credentials are not a service token.
        assert_eq!(
            service_token(&headers(&[
                ("x-service-token", "abc"),
                ("authorization", "Basic dXNlcjpwdw==")
            ])),
            Ok("abc")
        );
    }

    #[test]
    fn missing_conflicting_and_malformed() {
        assert_eq!(service_token(&headers(&[])), Err(ServiceAuthError::Missing));
        assert_eq!(
            service_token(&headers(&[("authorization", "Basic dXNlcjpwdw==")])),
            Err(ServiceAuthError::Missing)
        );
        assert_eq!(
            service_token(&headers(&[("authorization", "Bearer ")])),
            Err(ServiceAuthError::Missing)
        );
        assert_eq!(
            service_token(&headers(&[
                ("x-service-token", "abc"),
                ("authorization", "Bearer xyz")
            ]))
            .map_err(|e| e.code()),
            Err("invalid_service_token")
        );
        for bad in ["", "a b"] {
            assert_eq!(
                service_token(&headers(&[("x-service-token", bad)])).map_err(|e| e.code()),
                Err("invalid_service_token"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn permissions_are_checked_exactly() {
        let caller = ServiceCaller(ServiceIdentity {
            service: "database-server".into(),
            permissions: vec!["connectors:metadata:write".into()],
        });
        assert!(caller.require("connectors:metadata:write").is_ok());
        assert_eq!(
            caller.require("connectors:metadata").map_err(|e| e.code()),
            Err("insufficient_permission")
        );
    }
}
