//! What the browser sees after the callback: a small accessible HTML page, or a redirect to
//! the configured frontend with `status=success|error`.
//!
//! Every dynamic text is HTML-escaped; the page has no script, loads nothing, cannot be
//! framed, and is never cached. `Referrer-Policy: no-referrer` matters most: the callback URL
//! carries the authorization code. No token ever reaches a page or a redirect.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::events::FailureReason;

/// The outcome shown to the user.
#[derive(Debug, Clone)]
pub enum Outcome {
    Connected {
        subaccount_id: String,
        google_email: String,
    },
    Failed {
        status: StatusCode,
        /// `reason` in a frontend redirect: the event's reason, or `link_expired` /
        /// `temporarily_unavailable`.
        reason: &'static str,
        title: &'static str,
        message: String,
        /// A link that starts the attempt again (the account mismatch page), shown as a button.
        retry: Option<RetryLink>,
    },
}

/// Where the page's "try again" button leads, and what it says.
#[derive(Debug, Clone)]
pub struct RetryLink {
    pub url: url::Url,
    pub label: String,
}

impl Outcome {
    pub fn failed(
        status: StatusCode,
        reason: &'static str,
        title: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::Failed {
            status,
            reason,
            title,
            message: message.into(),
            retry: None,
        }
    }

    /// The same failure, with a button that starts the attempt again at `retry`.
    #[must_use]
    pub fn with_retry(mut self, link: RetryLink) -> Self {
        if let Self::Failed { retry, .. } = &mut self {
            *retry = Some(link);
        }
        self
    }

    /// The stable name of a failure reason, as in events.
    pub fn reason_name(reason: FailureReason) -> &'static str {
        match reason {
            FailureReason::AccessDenied => "access_denied",
            FailureReason::ProviderError => "provider_error",
            FailureReason::ScopeNotGranted => "scope_not_granted",
            FailureReason::TokenExchangeFailed => "token_exchange_failed",
            FailureReason::IdentityUnavailable => "identity_unavailable",
            FailureReason::ReauthRequired => "reauth_required",
            FailureReason::StorageUnavailable => "storage_unavailable",
            FailureReason::AccountLimitReached => "account_limit_reached",
            FailureReason::AccountMismatch => "account_mismatch",
        }
    }

    /// The page, or a 303 to `frontend` when one is configured.
    pub fn respond(self, frontend: Option<&url::Url>) -> Response {
        match frontend {
            Some(frontend) => self.redirect(frontend),
            None => self.page(),
        }
    }

    fn redirect(self, frontend: &url::Url) -> Response {
        let mut url = frontend.clone();
        {
            let mut query = url.query_pairs_mut();
            match &self {
                Self::Connected {
                    subaccount_id,
                    google_email,
                } => {
                    query
                        .append_pair("status", "success")
                        .append_pair("subaccountId", subaccount_id)
                        .append_pair("googleEmail", google_email);
                }
                Self::Failed { reason, .. } => {
                    query
                        .append_pair("status", "error")
                        .append_pair("reason", reason);
                }
            }
        }
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(location) = HeaderValue::from_str(url.as_str()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        secure(response)
    }

    fn page(self) -> Response {
        let (status, title, body) = match &self {
            Self::Connected { google_email, .. } => (
                StatusCode::OK,
                "Google Calendar connected",
                format!(
                    "<p>Your Google account <strong>{}</strong> is now connected.</p>\
                     <p>You can close this window.</p>",
                    html_escape::encode_text(google_email)
                ),
            ),
            Self::Failed {
                status,
                title,
                message,
                retry,
                ..
            } => {
                let mut body = format!("<p>{}</p>", html_escape::encode_text(message));
                if let Some(retry) = retry {
                    body.push_str(&format!(
                        "<p><a id=\"retry\" class=\"button\" href=\"{}\">{}</a></p>",
                        html_escape::encode_double_quoted_attribute(retry.url.as_str()),
                        html_escape::encode_text(&retry.label),
                    ));
                }
                (*status, *title, body)
            }
        };
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{STYLE}</style></head><body><main><h1 id=\"outcome\" data-status=\"{state}\">{title}</h1>{body}\
             </main></body></html>\n",
            title = html_escape::encode_text(title),
            state = if matches!(self, Self::Connected { .. }) {
                "success"
            } else {
                "error"
            },
        );
        let mut response = (status, html).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        secure(response)
    }
}

/// The only style of this worker's pages (the callback's outcome and the consent page), inline;
/// the policy allows exactly this text by its hash.
pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
                     padding:0 1rem;line-height:1.5;color:#1f2328}h1{font-size:1.5rem}\
                     .button{display:inline-block;padding:.6rem 1.2rem;border-radius:6px;\
                     background:#1a73e8;color:#fff;text-decoration:none}";

/// Nothing but [`STYLE`]: no script, no other style, no image, no form, never framed.
fn content_security_policy() -> HeaderValue {
    static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
        HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    });
    POLICY.clone()
}

/// The headers every page of this worker carries: no script, no framing, no referrer (the URL
/// carries a code or a state), no sniffing, no caching.
pub(crate) fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, content_security_policy());
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_escape_and_lock_down() {
        let response = Outcome::Connected {
            subaccount_id: "68cf05f060d294db17c0685e".into(),
            google_email: "<script>alert(1)</script>@example.com".into(),
        }
        .respond(None);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
        assert!(
            response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .is_ok_and(|csp| csp.contains("default-src 'none'"))
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("&lt;script&gt;"), "{body}");
        assert!(!body.contains("<script>"), "{body}");
    }

    #[tokio::test]
    async fn a_retry_link_is_an_escaped_button() {
        let response = Outcome::failed(
            StatusCode::FORBIDDEN,
            "account_mismatch",
            "This is not the expected Google account",
            "sent for a@example.com, used <b>@example.com",
        )
        .with_retry(RetryLink {
            url: "https://accounts.example/auth?state=s&login_hint=a%40example.com"
                .parse()
                .expect("url"),
            label: "Try again with a@example.com".into(),
        })
        .respond(None);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains(
                "<a id=\"retry\" class=\"button\" href=\"https://accounts.example/auth?state=s&amp;login_hint=a%40example.com\">Try again with a@example.com</a>"
            ),
            "{body}"
        );
        assert!(body.contains("&lt;b&gt;"), "{body}");
    }

    #[test]
    fn frontend_redirects_carry_the_outcome_only() {
        let frontend: url::Url = "https://app.example/connected?from=gcal"
            .parse()
            .expect("url");
        let response = Outcome::failed(
            StatusCode::BAD_REQUEST,
            "scope_not_granted",
            "Calendar access needed",
            "secret detail",
        )
        .respond(Some(&frontend));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()[header::LOCATION]
            .to_str()
            .expect("ascii");
        assert_eq!(
            location,
            "https://app.example/connected?from=gcal&status=error&reason=scope_not_granted"
        );
    }

    #[tokio::test]
    async fn the_policy_allows_the_pages_own_style_by_hash_and_nothing_inline_else() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let response = Outcome::failed(
            StatusCode::BAD_REQUEST,
            "access_denied",
            "Access denied",
            "detail",
        )
        .respond(None);
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(!csp.contains("unsafe"), "{csp}");
        for directive in [
            "default-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing: {csp}");
        }
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body = String::from_utf8_lossy(&body);
        let style = body
            .split_once("<style>")
            .and_then(|(_, rest)| rest.split_once("</style>"))
            .map(|(style, _)| style)
            .expect("one inline style");
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style));
        assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
    }
}
