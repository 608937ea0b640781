//! The oauth-worker against a standards-compliant authorization server rather than Google: the
//! fake provider as an OpenID provider (offline access by the `offline_access` scope) and with
//! strict client authentication at the token endpoint. Revocation with client authentication
//! is in `disconnect.rs`.

mod oauth_support;

use e2e::TestContext;
use e2e::fake_google::{ClientAuth, Decision, Profile};
use oauth_support::{OAuthStack, query};
use schemas::events::{
    AccessTokenRejectionCode, AccessTokenReply, ConnectionFailed, FailureReason,
};

const EMAIL: &str = "person@op.example";

fn allow() -> Decision {
    Decision::Allow {
        account: Some(EMAIL.into()),
        scopes: None,
    }
}

#[tokio::test]
async fn an_openid_provider_grants_offline_access_to_the_oidc_profile_only() {
    // The Google way of asking means nothing to an OpenID provider: connected, but with no
    // refresh token, which the access-token RPC names once the access token has expired.
    let google_way = OAuthStack::start(TestContext::new(), &[]).await;
    google_way.google.set_profile(Profile::Oidc);
    let (_, auth_url) = google_way.issue_link("user@example.com").await;
    assert_eq!(query(&auth_url)["access_type"], "offline");
    let callback = google_way.consent(&auth_url, allow()).await;
    let page = google_way.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let auth = google_way.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_bool("noRefreshToken"), Ok(true), "{auth:?}");
    google_way.expire_access_token(EMAIL).await;
    match google_way.access_token(EMAIL).await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::NoRefreshToken)
        }
        other => panic!("{other:?}"),
    }

    // The OIDC profile asks with the offline_access scope and prompt=consent, and gets one.
    let oidc = OAuthStack::start(TestContext::new(), &[("OAUTH_PROVIDER_PROFILE", "oidc")]).await;
    oidc.google.set_profile(Profile::Oidc);
    let (_, auth_url) = oidc.issue_link("user@example.com").await;
    let asked = query(&auth_url);
    assert!(
        asked["scope"].split(' ').any(|s| s == "offline_access"),
        "{asked:?}"
    );
    assert_eq!(asked["prompt"], "consent");
    assert!(!asked.contains_key("access_type"), "{asked:?}");
    let callback = oidc.consent(&auth_url, allow()).await;
    let page = oidc.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let auth = oidc.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_bool("noRefreshToken"), Ok(false), "{auth:?}");
    assert!(oidc.google.refresh_token_of(EMAIL).is_some());
    oidc.expire_access_token(EMAIL).await;
    match oidc.access_token(EMAIL).await {
        AccessTokenReply::Issued { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(oidc.google.token_requests("refresh_token"), 1);

    // Google has no offline_access scope: the OIDC profile is not for Google.
    let mismatch =
        OAuthStack::start(TestContext::new(), &[("OAUTH_PROVIDER_PROFILE", "oidc")]).await;
    let (_, auth_url) = mismatch.issue_link("user@example.com").await;
    let refused = mismatch
        .google
        .consent(&auth_url, allow())
        .await
        .expect_err("Google refuses the offline_access scope");
    assert!(
        refused.to_string().contains("offline_access"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn the_token_endpoint_gets_the_configured_client_authentication() {
    for method in [ClientAuth::Post, ClientAuth::Basic] {
        let stack = OAuthStack::start(
            TestContext::new(),
            &[("OAUTH_CLIENT_AUTH_METHOD", method.name())],
        )
        .await;
        stack.google.require_client_auth(Some(method));
        let (_, page) = stack.connect("user@example.com", allow()).await;
        assert_eq!(page.status, 200, "{method:?}: {}", page.body);
        stack.expire_access_token(EMAIL).await;
        match stack.access_token(EMAIL).await {
            AccessTokenReply::Issued { .. } => {}
            other => panic!("{method:?}: {other:?}"),
        }
        assert_eq!(stack.google.token_requests("refresh_token"), 1);
    }

    // A provider that takes only client_secret_post refuses the default (HTTP Basic).
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    stack.google.require_client_auth(Some(ClientAuth::Post));
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(stack.google_auth(EMAIL).await.is_none());
    let failed = stack
        .events::<ConnectionFailed>(std::time::Duration::from_secs(5))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::TokenExchangeFailed);
    assert!(
        failed[0].payload.message.contains("invalid_client"),
        "{}",
        failed[0].payload.message
    );
}
