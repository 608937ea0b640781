//! The connect flow as a person lives it, in real headless Chromium: the api issues a link, the
//! browser opens it at the fake Google, the user clicks Allow (or Deny, or unticks calendar),
//! and lands on the oauth-worker's page; the connection is stored and announced.

mod api_support;
mod oauth_support;

use std::time::Duration;

use api_support::{Api, connect_path, token};
use e2e::TestContext;
use e2e::browser::Browser;
use oauth_support::{OAuthStack, SUBACCOUNT};
use schemas::events::{ConnectionFailed, ConnectionSucceeded, FailureReason};
use serde_json::json;

const PAGE: Duration = Duration::from_secs(20);

/// The api and the oauth-worker on one context, the connector seeded; returns the auth URL
/// the api handed out.
async fn link_from_the_api(stack: &OAuthStack, api: &Api, user_email: &str) -> String {
    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": user_email, "sendEmail": false }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let auth_url = reply.body["data"]["authUrl"]
        .as_str()
        .expect("authUrl")
        .to_owned();
    assert!(auth_url.starts_with(stack.google.base_url()), "{auth_url}");
    auth_url
}

async fn setup() -> (OAuthStack, Api, Browser) {
    let ctx = TestContext::new();
    let stack = OAuthStack::start(ctx.clone(), &[]).await;
    let api = Api::start_in(ctx, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let browser = Browser::start().await.expect("browser");
    (stack, api, browser)
}

async fn outcome(browser: &Browser, stack: &OAuthStack) -> String {
    let redirect = stack.redirect_uri.clone();
    browser
        .wait_for_url(move |url| url.as_str().starts_with(&redirect), PAGE)
        .await
        .expect("back at the callback");
    browser
        .wait_for("#outcome", PAGE)
        .await
        .expect("outcome page");
    browser.text("main").await.expect("page text")
}

#[tokio::test]
async fn allow_in_the_browser_connects_the_account() {
    let (stack, api, browser) = setup().await;
    let auth_url = link_from_the_api(&stack, &api, "user@example.com").await;
    browser.goto(&auth_url).await.expect("consent page");
    browser
        .wait_for("#allow", PAGE)
        .await
        .expect("Allow button");
    browser
        .fill("#account", "person@gmail.example")
        .await
        .expect("account");
    browser.click("#allow").await.expect("click Allow");
    let text = outcome(&browser, &stack).await;
    assert!(text.contains("Google Calendar connected"), "{text}");
    assert!(text.contains("person@gmail.example"), "{text}");
    let png = browser
        .screenshot("browser_connect_success.png")
        .await
        .expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"));

    let events = stack
        .events::<ConnectionSucceeded>(Duration::from_secs(5))
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload.google_email, "person@gmail.example");
    assert_eq!(events[0].payload.user_email, "user@example.com");
    let stored = stack
        .google_auth("person@gmail.example")
        .await
        .expect("tokens stored");
    assert_eq!(stored.get_str("status").expect("status"), "active");
    browser.close().await.expect("browser closes");
}

#[tokio::test]
async fn deny_in_the_browser_shows_why_and_stores_nothing() {
    let (stack, api, browser) = setup().await;
    let auth_url = link_from_the_api(&stack, &api, "user@example.com").await;
    browser.goto(&auth_url).await.expect("consent page");
    browser.wait_for("#deny", PAGE).await.expect("Deny button");
    browser.click("#deny").await.expect("click Deny");
    let text = outcome(&browser, &stack).await;
    assert!(text.contains("access was denied"), "{text}");
    let failed = stack
        .events::<ConnectionFailed>(Duration::from_secs(5))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::AccessDenied);
    assert!(stack.calendars().await.is_empty());
    browser.close().await.expect("browser closes");
}

#[tokio::test]
async fn unticking_calendar_in_the_browser_asks_for_it() {
    let (stack, api, browser) = setup().await;
    let auth_url = link_from_the_api(&stack, &api, "user@example.com").await;
    browser.goto(&auth_url).await.expect("consent page");
    browser.wait_for("#scope-0", PAGE).await.expect("scopes");
    let label = browser.page_source().await.expect("source");
    assert!(label.contains("https://www.googleapis.com/auth/calendar"));
    browser
        .set_checked("#scope-0", false)
        .await
        .expect("untick calendar");
    browser.click("#allow").await.expect("click Allow");
    let text = outcome(&browser, &stack).await;
    assert!(text.contains("calendar access"), "{text}");
    let failed = stack
        .events::<ConnectionFailed>(Duration::from_secs(5))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::ScopeNotGranted);
    browser.close().await.expect("browser closes");
}
