//! `GET /api/google/consent?state=…`: the page the authorization email links to. It says who
//! asks (the product and the tenant), what access in plain words, until when the link works
//! and that an unexpected request can be ignored, then offers "Continue to Google" — a plain
//! link to the provider's consent URL issued with the state.
//!
//! The connect answer's `authUrl` stays the provider's URL (the spec's contract); only the
//! email goes through this page. Showing it does not use the state up: only the callback
//! does, so a mail scanner that opens the link, or a person who looks twice, spends nothing.
//! It is served next to the callback (the redirect URI's sibling path), so it needs no
//! setting of its own. Every dynamic text is HTML-escaped; the page has no script, cannot be
//! framed, sends no referrer and is never cached.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use schemas::DisplayName;
use serde::Deserialize;
use service_kit::consent::{self, ConsentNotice};

use crate::callback::page::{Outcome, STYLE, secure};
use service_kit::oauth_state::StateStore;

/// The page's path, next to [`crate::callback::PATH`].
pub const PATH: &str = "/api/google/consent";

#[derive(Debug)]
pub struct ConsentPage {
    pub states: StateStore,
    pub product_name: DisplayName,
    pub scopes: Vec<String>,
}

/// The page's public URL: the redirect URI's sibling (`…/api/google/callback` →
/// `…/api/google/consent`), so it is reached wherever the callback is.
pub fn url(redirect_uri: &url::Url) -> url::Url {
    let mut url = redirect_uri.join("consent").unwrap_or_else(|_| {
        let mut url = redirect_uri.clone();
        url.set_path(PATH);
        url
    });
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The page for one issued link.
pub fn link(page: &url::Url, state: &str) -> url::Url {
    let mut link = page.clone();
    link.query_pairs_mut().append_pair("state", state);
    link
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    state: Option<String>,
}

pub fn router(page: Arc<ConsentPage>) -> Router {
    Router::new().route(PATH, get(show)).with_state(page)
}

async fn show(
    State(page): State<Arc<ConsentPage>>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let state = query
        .ok()
        .and_then(|Query(q)| q.state)
        .filter(|s| !s.is_empty() && s.len() <= 512);
    let attempt = match state {
        None => Ok(None),
        Some(state) => page.states.peek(&state).await,
    };
    let outcome = match attempt {
        Ok(Some(attempt)) => match (attempt.auth_url, attempt.expires_at) {
            (Some(auth_url), Some(expires_at)) if expires_at > Utc::now() => {
                let notice = ConsentNotice {
                    product_name: page.product_name.as_str(),
                    tenant_name: attempt.tenant_name.as_ref().map(DisplayName::as_str),
                    subaccount_id: attempt.subaccount_id.as_str(),
                    scopes: &page.scopes,
                    expires_at,
                };
                metrics::counter!("consent_pages_total", "outcome" => "shown").increment(1);
                return render(&notice, &auth_url);
            }
            // Stored by an older version, which emailed the provider's URL itself.
            _ => "link_expired",
        },
        Ok(None) => "link_expired",
        Err(error) => {
            tracing::error!(%error, "cannot read the OAuth state for the consent page");
            "temporarily_unavailable"
        }
    };
    metrics::counter!("consent_pages_total", "outcome" => outcome).increment(1);
    let failure = if outcome == "link_expired" {
        Outcome::failed(
            StatusCode::GONE,
            "link_expired",
            "This link has expired",
            "This connection link has expired or was already used. Ask whoever sent it for a \
             new one.",
        )
    } else {
        Outcome::failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "Please try again",
            "We could not check your link just now. Please try again in a moment.",
        )
    };
    // Always this worker's page: a frontend redirect is for the callback's outcome only.
    failure.respond(None)
}

fn render(notice: &ConsentNotice<'_>, auth_url: &str) -> Response {
    let e = |text: &str| html_escape::encode_quoted_attribute(text).into_owned();
    let access: String = notice
        .access()
        .iter()
        .map(|line| format!("<li>{}</li>", e(line)))
        .collect();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Connect your Google Calendar</title><style>{STYLE}</style></head>\
         <body><main><h1>Connect your Google Calendar</h1>\
         <p id=\"who\">{who}</p>\
         <p>If you allow it, {tenant} will be able to:</p><ul id=\"access\">{access}</ul>\
         <p id=\"expiry\">{expiry}</p>\
         <p><a class=\"button\" id=\"continue\" href=\"{auth_url}\">Continue to Google</a></p>\
         <p id=\"ignore\">{ignore}</p></main></body></html>\n",
        who = e(&notice.who_asks()),
        tenant = e(&notice.tenant()),
        expiry = e(&notice.expiry(Utc::now())),
        auth_url = e(auth_url),
        ignore = e(consent::IGNORE_PAGE),
    );
    let mut response = (StatusCode::OK, html).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lives_next_to_the_callback() {
        let redirect: url::Url = "https://connect.example/gcal/api/google/callback"
            .parse()
            .expect("url");
        let page = url(&redirect);
        assert_eq!(
            page.as_str(),
            "https://connect.example/gcal/api/google/consent"
        );
        assert_eq!(
            link(&page, "a+b/c").as_str(),
            "https://connect.example/gcal/api/google/consent?state=a%2Bb%2Fc"
        );
    }
}
