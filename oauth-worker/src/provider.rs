//! Talking to the OAuth provider after consent: the code exchange (with the PKCE verifier),
//! refresh, the account's identity (userinfo), its primary calendar, and revocation.
//!
//! Every call is bounded by `PROVIDER_TIMEOUT`. Transient failures (network errors, 5xx,
//! `temporarily_unavailable`, rate limits) are retried with jittered backoff up to
//! `PROVIDER_ATTEMPTS` times; the provider's refusals (`invalid_grant`, `invalid_client`, ...)
//! are not. Tokens never appear in errors or logs: errors carry the provider's error code and
//! HTTP status only.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use oauth2::basic::BasicErrorResponseType;
use oauth2::{
    AuthorizationCode, PkceCodeVerifier, RefreshToken, RequestTokenError, TokenResponse as _,
};
use serde::Deserialize;

use crate::authorization::ProviderClient;
use crate::config::{ClientAuthMethod, ProviderConfig, Secret};

/// Tokens as the provider returned them. Secrets: no `Debug` that prints them.
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Duration,
    /// The scopes granted, as the provider names them; `None` when it did not say (RFC 6749:
    /// then they are the ones requested — trusted only with `OAUTH_TOKEN_RESPONSE_OMITS_SCOPE`).
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What became of a token sent to the revocation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The provider revoked it.
    Revoked,
    /// The provider no longer knew it as valid (`invalid_token`): expired, or revoked before.
    AlreadyInvalid,
}

/// The account that consented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub email: String,
    /// The provider said `email_verified: true`. `CONSENT_ACCOUNT_POLICY` `invited` and
    /// `domain` accept only a verified email; an unstated one does not count.
    pub email_verified: bool,
}

/// The account's primary calendar, as the Calendar API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryCalendar {
    pub id: String,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused: `invalid_grant` (code used, expired, wrong PKCE, revoked refresh
    /// token), `invalid_client`, ... Retrying does not help.
    #[error("the provider refused the request: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        code: String,
        description: Option<String>,
    },
    /// Network trouble, a timeout, a 5xx or an unreadable answer, still so after the retries.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
}

impl ProviderError {
    /// The refresh token no longer works: the user must connect again.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "invalid_grant")
    }

    /// The error as a metric label, from a bounded set whatever the provider sends: the
    /// RFC 6749 / RFC 7009 error codes, `http_4xx` for a refusal without a code,
    /// `unavailable`, else `other`.
    pub fn code_label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Refused { code, .. } => match code.as_str() {
                "invalid_client" => "invalid_client",
                "unauthorized_client" => "unauthorized_client",
                "invalid_request" => "invalid_request",
                "invalid_grant" => "invalid_grant",
                "unsupported_token_type" => "unsupported_token_type",
                "access_denied" => "access_denied",
                code if code.starts_with("http_4") => "http_4xx",
                _ => "other",
            },
        }
    }

    /// Worth retrying: the provider was unavailable or said so.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Refused { code, .. } => matches!(
                code.as_str(),
                "server_error" | "temporarily_unavailable" | "rate_limit_exceeded"
            ),
        }
    }
}

/// The provider's endpoints and one HTTP client for all of them.
#[derive(Debug, Clone)]
pub struct Provider {
    client: ProviderClient,
    http: reqwest::Client,
    userinfo_url: url::Url,
    calendar_api_url: url::Url,
    revoke_url: url::Url,
    client_id: String,
    client_secret: Secret,
    client_auth: ClientAuthMethod,
    attempts: usize,
}

impl Provider {
    pub fn new(config: &ProviderConfig, client: ProviderClient) -> Self {
        let http = reqwest::Client::builder()
            // OAuth endpoints must not redirect (RFC 6749 §3.2 discourages it; following one
            // could send the code or tokens elsewhere).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()
            .expect("an HTTP client with rustls and a timeout always builds");
        Self {
            client,
            http,
            userinfo_url: config.userinfo_url.clone(),
            calendar_api_url: config.calendar_api_url.clone(),
            revoke_url: config.revoke_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client_auth: config.client_auth,
            attempts: config.attempts.max(1),
        }
    }

    /// Runs `attempt` up to `PROVIDER_ATTEMPTS` times with jittered backoff while it fails
    /// transiently; `what` names the call in the retry log line.
    async fn retrying<T, Fut>(
        &self,
        what: &'static str,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(self.attempts - 1)
                    .with_jitter(),
            )
            .when(ProviderError::is_transient)
            .notify(|error, after| tracing::warn!(%error, ?after, what, "provider call failed; retrying"))
            .await
    }

    /// Exchanges an authorization code, sending the PKCE verifier (the client authenticates
    /// as `OAUTH_CLIENT_AUTH_METHOD` says).
    pub async fn exchange_code(&self, code: &str, verifier: &str) -> Result<Tokens, ProviderError> {
        let attempt = || async {
            let response = self
                .client
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
                .request_async(&self.http)
                .await;
            token_result(response)
        };
        self.retrying("code exchange", attempt).await
    }

    /// A new access token from a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ProviderError> {
        let attempt = || async {
            let response = self
                .client
                .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
                .request_async(&self.http)
                .await;
            token_result(response)
        };
        self.retrying("token refresh", attempt).await
    }

    /// The account's email from the userinfo endpoint; it must be verified. Fail closed: an
    /// answer without `email_verified` counts as unverified (OIDC Core §5.1 makes the claim
    /// optional; an email nobody verified proves no one's identity).
    pub async fn identity(&self, access_token: &str) -> Result<Identity, ProviderError> {
        #[derive(Deserialize)]
        struct UserInfo {
            email: Option<String>,
            email_verified: Option<bool>,
        }
        let info: UserInfo = self
            .get_json(self.userinfo_url.clone(), access_token)
            .await?;
        match (info.email, info.email_verified) {
            (Some(email), Some(true)) if !email.is_empty() => Ok(Identity {
                email: schemas::google_account_key(&email),
                // Fail closed: only an explicit `email_verified: true` gets here.
                email_verified: true,
            }),
            (Some(email), Some(false)) if !email.is_empty() => Err(ProviderError::Refused {
                code: "email_not_verified".into(),
                description: Some("the account's email address is not verified".into()),
            }),
            (Some(email), None) if !email.is_empty() => Err(ProviderError::Refused {
                code: "email_not_verified".into(),
                description: Some(
                    "userinfo did not say the account's email address is verified (no email_verified)"
                        .into(),
                ),
            }),
            _ => Err(ProviderError::Refused {
                code: "no_email".into(),
                description: Some(
                    "userinfo returned no email (is the `email` scope granted?)".into(),
                ),
            }),
        }
    }

    /// `GET {calendar API}/users/me/calendarList/primary`.
    pub async fn primary_calendar(
        &self,
        access_token: &str,
    ) -> Result<PrimaryCalendar, ProviderError> {
        let mut url = self.calendar_api_url.clone();
        url.path_segments_mut()
            .map_err(|()| {
                ProviderError::Unavailable("GOOGLE_CALENDAR_API_URL cannot be a base".into())
            })?
            .pop_if_empty()
            .extend(["users", "me", "calendarList", "primary"]);
        self.get_json(url, access_token).await
    }

    /// Revokes a token at the provider (RFC 7009), the client authenticated as at the token
    /// endpoint (§2.1: a confidential client must). A token the provider already considers
    /// invalid is [`Revocation::AlreadyInvalid`]. The oauth2 crate refuses non-https
    /// revocation URLs, and the local fake provider is plain http, so this is a plain form
    /// POST.
    pub async fn revoke(&self, token: &str) -> Result<Revocation, ProviderError> {
        let attempt = || async {
            let mut form = vec![("token", token)];
            let request = self.http.post(self.revoke_url.clone());
            let request = match self.client_auth {
                // RFC 6749 §2.3.1: id and secret form-url-encoded before Basic encoding, as
                // the oauth2 crate does at the token endpoint.
                ClientAuthMethod::ClientSecretBasic => request.basic_auth(
                    form_encode(&self.client_id),
                    Some(form_encode(self.client_secret.expose())),
                ),
                ClientAuthMethod::ClientSecretPost => {
                    form.push(("client_id", &self.client_id));
                    form.push(("client_secret", self.client_secret.expose()));
                    request
                }
            };
            let response = request
                .form(&form)
                .send()
                .await
                .map_err(|e| ProviderError::Unavailable(without_url(e)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(Revocation::Revoked);
            }
            let body: ErrorBody = response.json().await.unwrap_or_default();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(ProviderError::Unavailable(format!(
                    "revocation answered {status}"
                )));
            }
            match body.error.as_deref() {
                Some("invalid_token") => Ok(Revocation::AlreadyInvalid),
                Some(code) => Err(ProviderError::Refused {
                    code: code.to_owned(),
                    description: body.error_description,
                }),
                None => Err(ProviderError::Refused {
                    code: format!("http_{}", status.as_u16()),
                    description: None,
                }),
            }
        };
        self.retrying("revocation", attempt).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: url::Url,
        access_token: &str,
    ) -> Result<T, ProviderError> {
        let attempt = || async {
            let response = self
                .http
                .get(url.clone())
                .bearer_auth(access_token)
                .send()
                .await
                .map_err(|e| ProviderError::Unavailable(without_url(e)))?;
            let status = response.status();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(ProviderError::Unavailable(format!(
                    "{} answered {status}",
                    url.path()
                )));
            }
            if !status.is_success() {
                return Err(ProviderError::Refused {
                    code: format!("http_{}", status.as_u16()),
                    description: Some(format!("{} answered {status}", url.path())),
                });
            }
            response.json::<T>().await.map_err(|e| {
                ProviderError::Unavailable(format!(
                    "unreadable answer from {}: {}",
                    url.path(),
                    without_url(e)
                ))
            })
        };
        self.retrying("resource fetch", attempt).await
    }
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

type TokenResult = Result<
    oauth2::basic::BasicTokenResponse,
    RequestTokenError<oauth2::HttpClientError<reqwest::Error>, oauth2::basic::BasicErrorResponse>,
>;

fn token_result(response: TokenResult) -> Result<Tokens, ProviderError> {
    match response {
        Ok(token) => Ok(Tokens {
            access_token: token.access_token().secret().clone(),
            refresh_token: token.refresh_token().map(|t| t.secret().clone()),
            expires_in: token.expires_in().unwrap_or(Duration::from_secs(3600)),
            scopes: token
                .scopes()
                .map(|scopes| scopes.iter().map(|s| s.to_string()).collect()),
        }),
        Err(RequestTokenError::ServerResponse(error)) => Err(ProviderError::Refused {
            code: match error.error() {
                BasicErrorResponseType::Extension(code) => code.clone(),
                other => other.to_string(),
            },
            description: error.error_description().cloned(),
        }),
        Err(RequestTokenError::Request(error)) => Err(ProviderError::Unavailable(match error {
            oauth2::HttpClientError::Reqwest(e) => without_url(*e),
            other => other.to_string(),
        })),
        // A 5xx with an HTML body, or a 2xx that is not a token response.
        Err(RequestTokenError::Parse(_, body)) => Err(ProviderError::Unavailable(format!(
            "unreadable token endpoint answer ({} bytes)",
            body.len()
        ))),
        Err(RequestTokenError::Other(message)) => Err(ProviderError::Unavailable(message)),
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// reqwest errors print the URL, which for these endpoints carries nothing secret, but keep
/// messages short and free of query strings anyway.
fn without_url(error: reqwest::Error) -> String {
    error.without_url().to_string()
}

/// The required scopes the grant lacks. Google reports `email`/`profile` by their long names
/// (`https://www.googleapis.com/auth/userinfo.email`), so both spellings count.
pub fn missing_scopes(required: &[String], granted: &[String]) -> Vec<String> {
    let canonical = |scope: &str| -> String {
        match scope {
            "email" => "https://www.googleapis.com/auth/userinfo.email".to_owned(),
            "profile" => "https://www.googleapis.com/auth/userinfo.profile".to_owned(),
            other => other.to_owned(),
        }
    };
    let granted: Vec<String> = granted.iter().map(|s| canonical(s)).collect();
    required
        .iter()
        .filter(|scope| !granted.contains(&canonical(scope)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scopes_know_googles_long_names() {
        let required: Vec<String> = [
            "https://www.googleapis.com/auth/calendar",
            "openid",
            "email",
        ]
        .map(String::from)
        .to_vec();
        let google: Vec<String> = [
            "https://www.googleapis.com/auth/userinfo.email",
            "openid",
            "https://www.googleapis.com/auth/calendar",
        ]
        .map(String::from)
        .to_vec();
        assert!(missing_scopes(&required, &google).is_empty());
        let partial: Vec<String> = ["openid", "email"].map(String::from).to_vec();
        assert_eq!(
            missing_scopes(&required, &partial),
            vec!["https://www.googleapis.com/auth/calendar".to_owned()]
        );
    }
}
