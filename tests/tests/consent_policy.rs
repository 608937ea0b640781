//! `CONSENT_ACCOUNT_POLICY` end to end against the fake Google, over real NATS, Redis and the
//! MongoDB-wire server: `any` keeps the spec's semantics (another account connects), `invited`
//! binds a link to its `userEmail`, `domain` to a list of domains. A refused account stores
//! nothing, has its grant revoked at the provider before the page is shown, gets a page that
//! names the expected account with a working "try again" link, and produces connection-failed
//! with reason `account_mismatch`.

mod oauth_support;

use std::time::Duration;

use e2e::TestContext;
use e2e::fake_google::Decision;
use oauth_support::{OAuthStack, Page, SUBACCOUNT, query};
use schemas::events::{ConnectionFailed, ConnectionSucceeded, FailureReason};
use service_kit::{Env, ServiceConfig};

const WAIT: Duration = Duration::from_secs(5);
const INVITED: &[(&str, &str)] = &[("CONSENT_ACCOUNT_POLICY", "invited")];
const DOMAINS: &[(&str, &str)] = &[
    ("CONSENT_ACCOUNT_POLICY", "domain"),
    ("CONSENT_ALLOWED_DOMAINS", "example.com, Other.org"),
];

fn as_account(account: &str) -> Decision {
    Decision::Allow {
        account: Some(account.into()),
        scopes: None,
    }
}

/// The `href` of the page's "try again" button, unescaped.
fn retry_href(page: &Page) -> String {
    let start = page
        .body
        .find("id=\"retry\"")
        .unwrap_or_else(|| panic!("no retry link in {}", page.body));
    let rest = &page.body[start..];
    let href = rest
        .split_once("href=\"")
        .and_then(|(_, after)| after.split_once('"'))
        .map(|(href, _)| href)
        .expect("an href");
    html_escape::decode_html_entities(href).into_owned()
}

/// Everything a refusal must leave behind: a 403 page naming both accounts, no tokens or
/// calendar stored for the account used, its grant revoked at the provider, and one
/// connection-failed `account_mismatch` naming the invited and the used account.
async fn assert_refused(stack: &OAuthStack, page: &Page, invited: &str, used: &str) {
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("data-status=\"error\""), "{}", page.body);
    assert!(
        page.body.contains(used),
        "used account not named: {}",
        page.body
    );
    assert!(stack.google_auth(used).await.is_none(), "tokens stored");
    assert!(stack.calendars().await.is_empty(), "calendar entry stored");
    let refresh = stack.google.refresh_token_of(used).expect("a grant issued");
    assert!(
        stack.google.is_revoked(&refresh),
        "the refused grant is still live at the provider"
    );
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let event = &failed[0].payload;
    assert_eq!(event.reason, FailureReason::AccountMismatch);
    assert_eq!(event.user_email.as_deref(), Some(invited));
    assert_eq!(event.google_email.as_deref(), Some(used));
    assert!(event.message.contains(used), "{}", event.message);
    assert!(
        stack
            .events::<ConnectionSucceeded>(Duration::ZERO)
            .await
            .is_empty(),
        "a refused account was announced as connected"
    );
}

#[tokio::test]
async fn invited_connects_the_invited_account_whatever_its_case() {
    let stack = OAuthStack::start(TestContext::new(), INVITED).await;
    let (_, page) = stack
        .connect(" User@Example.com", as_account("user@EXAMPLE.com"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(stack.google_auth("user@example.com").await.is_some());
    assert_eq!(stack.events::<ConnectionSucceeded>(WAIT).await.len(), 1);
}

#[tokio::test]
async fn invited_refuses_another_account_and_its_retry_link_connects_the_invited_one() {
    let stack = OAuthStack::start(TestContext::new(), INVITED).await;
    let (request, page) = stack
        .connect("user@example.com", as_account("other@gmail.example"))
        .await;
    assert_refused(&stack, &page, "user@example.com", "other@gmail.example").await;
    assert!(
        page.body
            .contains("sent for the Google account user@example.com"),
        "expected account not named: {}",
        page.body
    );
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert!(
        failed[0].payload.message.contains("user@example.com"),
        "{}",
        failed[0].payload.message
    );
    assert_eq!(failed[0].correlation_id, request.correlation_id);

    // The original state is spent; the button is a new link for the same attempt that asks
    // the provider for its account chooser, suggesting the invited account.
    let retry = retry_href(&page);
    let params = query(&retry);
    assert_eq!(params["login_hint"], "user@example.com");
    assert!(
        params["prompt"].split(' ').any(|p| p == "select_account"),
        "{retry}"
    );
    let callback = stack.consent(&retry, Decision::allow()).await;
    let connected = stack.open(&callback).await;
    assert_eq!(connected.status, 200, "{}", connected.body);
    assert!(stack.google_auth("user@example.com").await.is_some());
    let succeeded = stack.events::<ConnectionSucceeded>(WAIT).await;
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(succeeded[0].correlation_id, request.correlation_id);
    assert_eq!(succeeded[0].payload.user_email, "user@example.com");
    assert_eq!(succeeded[0].subaccount_id.as_str(), SUBACCOUNT);

    // The retry link is single use like any other.
    assert_eq!(stack.open(&callback).await.status, 400);
}

#[tokio::test]
async fn an_unverified_email_is_refused_and_its_grant_revoked_under_every_policy() {
    for policy in [INVITED, &[][..]] {
        let stack = OAuthStack::start(TestContext::new(), policy).await;
        // Google always states it; other providers may leave the claim out, which is not a
        // "yes" (fail closed), so neither a false nor a missing claim connects anything.
        for (account, verified) in [
            ("user@example.com", None),
            ("other@example.com", Some(false)),
        ] {
            stack.google.set_email_verified(account, verified);
            let (_, page) = stack.connect("user@example.com", as_account(account)).await;
            assert_eq!(page.status, 400, "{}", page.body);
            assert!(stack.google_auth(account).await.is_none(), "tokens stored");
            let refresh = stack
                .google
                .refresh_token_of(account)
                .expect("a grant issued");
            assert!(
                stack.google.is_revoked(&refresh),
                "the refused grant is still live at the provider"
            );
        }
        assert!(stack.calendars().await.is_empty(), "calendar entry stored");
        // Published after the page answered: wait for both.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut failed = stack.events::<ConnectionFailed>(WAIT).await;
        while failed.len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            failed = stack.events::<ConnectionFailed>(WAIT).await;
        }
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            failed
                .iter()
                .all(|e| e.payload.reason == FailureReason::IdentityUnavailable),
            "{failed:?}"
        );
        assert!(
            stack
                .events::<ConnectionSucceeded>(Duration::ZERO)
                .await
                .is_empty()
        );
    }
}

#[tokio::test]
async fn domain_connects_an_account_of_an_allowed_domain() {
    let stack = OAuthStack::start(TestContext::new(), DOMAINS).await;
    let (_, page) = stack
        .connect("user@example.com", as_account("colleague@other.ORG"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(stack.google_auth("colleague@other.org").await.is_some());
    assert_eq!(stack.events::<ConnectionSucceeded>(WAIT).await.len(), 1);
}

#[tokio::test]
async fn domain_refuses_an_account_of_another_domain_naming_the_allowed_ones() {
    let stack = OAuthStack::start(TestContext::new(), DOMAINS).await;
    let (_, page) = stack
        .connect("user@example.com", as_account("someone@gmail.example"))
        .await;
    assert_refused(&stack, &page, "user@example.com", "someone@gmail.example").await;
    assert!(
        page.body.contains("example.com or other.org"),
        "allowed domains not named: {}",
        page.body
    );
    // The invited address is in an allowed domain: the new link suggests it.
    assert_eq!(query(&retry_href(&page))["login_hint"], "user@example.com");
}

#[tokio::test]
async fn any_connects_an_account_other_than_the_invited_one_as_the_spec_does() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let (_, page) = stack
        .connect("user@example.com", as_account("googleuser@gmail.example"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let succeeded = stack.events::<ConnectionSucceeded>(WAIT).await;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].payload.user_email, "user@example.com");
    assert_eq!(
        succeeded[0].payload.google_email,
        "googleuser@gmail.example"
    );
}

#[tokio::test]
async fn a_refusal_stands_when_the_revocation_fails_and_is_counted() {
    let metrics = service_kit::metrics::handle();
    let stack = OAuthStack::start(
        TestContext::new(),
        &[
            ("CONSENT_ACCOUNT_POLICY", "invited"),
            ("PROVIDER_ATTEMPTS", "1"),
        ],
    )
    .await;
    stack.google.fail_next_revoke_requests(1, 503);
    let (_, page) = stack
        .connect("user@example.com", as_account("other@gmail.example"))
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(stack.google_auth("other@gmail.example").await.is_none());
    assert_eq!(stack.google.revoke_requests(), 1);
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed[0].payload.reason, FailureReason::AccountMismatch);
    let scraped = metrics.render();
    let series = r#"callback_revocations_total{reason="account_mismatch",outcome="failed"}"#;
    assert!(scraped.contains(series), "{series} missing from\n{scraped}");
}

#[tokio::test]
async fn a_frontend_is_told_account_mismatch() {
    let stack = OAuthStack::start(
        TestContext::new(),
        &[
            ("CONSENT_ACCOUNT_POLICY", "invited"),
            ("FRONTEND_REDIRECT_URL", "https://app.example/connected"),
        ],
    )
    .await;
    let (_, page) = stack
        .connect("user@example.com", as_account("other@gmail.example"))
        .await;
    assert_eq!(page.status, 303);
    let location = page.headers["location"].to_str().expect("ascii");
    assert_eq!(
        location,
        "https://app.example/connected?status=error&reason=account_mismatch"
    );
    assert!(stack.google_auth("other@gmail.example").await.is_none());
}

#[test]
fn the_domain_policy_without_domains_refuses_to_start() {
    let settings = [("CONSENT_ACCOUNT_POLICY", "domain")];
    let error = oauth_worker::OAuthWorkerConfig::from_env(Env::from_pairs(settings))
        .expect_err("refused")
        .to_string();
    assert!(error.contains("CONSENT_ALLOWED_DOMAINS"), "{error}");
}
