//! The OAuth callback end to end over real NATS, Redis and the MongoDB-wire server, against the
//! fake Google: consent → callback → tokens encrypted in MongoDB, the calendar entry, and
//! connection-succeeded in JetStream; every failure path with its page and connection-failed.

mod oauth_support;

use std::time::Duration;

use e2e::TestContext;
use e2e::fake_google::Decision;
use oauth_support::{CALENDAR, OAuthStack, SUBACCOUNT, query};
use redis::AsyncCommands;
use schemas::events::{ConnectionFailed, ConnectionSucceeded, FailureReason};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn consent_stores_encrypted_tokens_and_the_calendar_and_announces_the_connection() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let (request, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: Some("Person@Gmail.example".into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("person@gmail.example"), "{}", page.body);
    assert!(page.body.contains("data-status=\"success\""));
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("default-src 'none'")
    );
    assert_eq!(page.headers["cache-control"], "no-store");

    let events = stack.events::<ConnectionSucceeded>(WAIT).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.correlation_id, request.correlation_id);
    assert_eq!(event.subaccount_id.as_str(), SUBACCOUNT);
    assert_eq!(event.payload.user_email, "user@example.com");
    assert_eq!(event.payload.google_email, "person@gmail.example");
    assert_eq!(
        event.payload.connected_at.len(),
        24,
        "{}",
        event.payload.connected_at
    );
    assert!(event.payload.connected_at.ends_with('Z'));

    // The calendar entry the event names.
    let calendars = stack.calendars().await;
    assert_eq!(calendars.len(), 1);
    assert_eq!(
        calendars[0].get_object_id("_id").expect("id").to_hex(),
        event.payload.calendar_id
    );
    assert_eq!(
        calendars[0].get_str("providerCalendarId").expect("id"),
        "person@gmail.example"
    );

    // Tokens are ciphertext, bound to the current key; the outbox entry is cleared.
    let auth = stack
        .google_auth("person@gmail.example")
        .await
        .expect("stored");
    let refresh = stack
        .google
        .refresh_token_of("person@gmail.example")
        .expect("issued");
    let raw = format!("{auth:?}");
    assert!(!raw.contains(&refresh), "refresh token stored in clear");
    assert!(!raw.contains("ya29."), "access token stored in clear");
    assert_eq!(
        auth.get_document("accessToken")
            .expect("encrypted")
            .get_str("keyId")
            .expect("key id"),
        "a"
    );
    assert!(auth.get_document("refreshToken").is_ok());
    assert_eq!(auth.get_str("status").expect("status"), "active");
    assert!(
        auth.get("pendingEvent").is_none(),
        "outbox entry not cleared"
    );
    let scopes = auth.get_array("scopes").expect("scopes");
    assert!(scopes.iter().any(|s| s.as_str() == Some(CALENDAR)));
}

#[tokio::test]
async fn a_state_works_once_and_forged_or_expired_states_change_nothing() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let (_, auth_url) = stack.issue_link("user@example.com").await;
    let callback = stack.consent(&auth_url, Decision::allow()).await;
    assert_eq!(stack.open(&callback).await.status, 200);
    let replay = stack.open(&callback).await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("expired"), "{}", replay.body);

    let forged = callback.replace(&query(&callback)["state"], "forged-state-value");
    let page = stack.open(&forged).await;
    assert_eq!(page.status, 400);
    let missing = format!("{}?code=abc", stack.redirect_uri);
    assert_eq!(stack.open(&missing).await.status, 400);

    // Expired: the attempt's TTL ran out before the user came back.
    let (_, auth_url) = stack.issue_link("late@example.com").await;
    let state = query(&auth_url)["state"].clone();
    let mut redis = stack.redis().await;
    let _: () = redis
        .pexpire(stack.state_key(&state), 1)
        .await
        .expect("expire");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let callback = stack.consent(&auth_url, Decision::allow()).await;
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("expired"));

    // One connection, one event; nothing for the refused callbacks.
    assert_eq!(stack.events::<ConnectionSucceeded>(WAIT).await.len(), 1);
    assert!(
        stack
            .events::<ConnectionFailed>(Duration::from_millis(500))
            .await
            .is_empty()
    );
    assert!(stack.google_auth("late@example.com").await.is_none());
}

#[tokio::test]
async fn deny_shows_a_friendly_page_and_announces_access_denied() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let (request, page) = stack.connect("user@example.com", Decision::Deny).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("access was denied"), "{}", page.body);
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::AccessDenied);
    assert_eq!(failed[0].correlation_id, request.correlation_id);
    assert_eq!(
        failed[0].payload.user_email.as_deref(),
        Some("user@example.com")
    );
    assert!(stack.calendars().await.is_empty());
}

#[tokio::test]
async fn a_partial_grant_is_refused_naming_the_missing_scope() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let (_, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: None,
                scopes: Some(vec!["openid".into(), "email".into()]),
            },
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("calendar access"), "{}", page.body);
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::ScopeNotGranted);
    assert_eq!(failed[0].payload.missing_scopes, vec![CALENDAR.to_owned()]);
    assert!(stack.google_auth("user@example.com").await.is_none());
    // The unused grant is given back.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stack.google.revoke_requests() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.google.revoke_requests(), 1);
}

#[tokio::test]
async fn a_wrong_pkce_verifier_fails_the_exchange() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let (_, auth_url) = stack.issue_link("user@example.com").await;
    let state = query(&auth_url)["state"].clone();
    let mut redis = stack.redis().await;
    let key = stack.state_key(&state);
    let stored: String = redis.get(&key).await.expect("attempt");
    let mut attempt: serde_json::Value = serde_json::from_str(&stored).expect("json");
    attempt["pkceVerifier"] = "x".repeat(64).into();
    let _: () = redis
        .set_options(
            &key,
            attempt.to_string(),
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(60_000)),
        )
        .await
        .expect("tamper");
    let callback = stack.consent(&auth_url, Decision::allow()).await;
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::TokenExchangeFailed);
    assert!(
        !failed[0]
            .payload
            .message
            .contains(&query(&callback)["code"]),
        "the code leaked into the event"
    );
    assert_eq!(stack.google.token_requests("authorization_code"), 1);
}

#[tokio::test]
async fn token_endpoint_outages_are_retried_then_reported() {
    let stack = OAuthStack::start(TestContext::new(), &[("PROVIDER_ATTEMPTS", "3")]).await;
    // Two failures then success: the callback still succeeds.
    stack.google.fail_next_token_requests(2, 503);
    let (_, page) = stack.connect("user@example.com", Decision::allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(stack.google.token_requests("authorization_code"), 3);
    // Down for longer than the attempts: a failure page, never a hang.
    stack.google.fail_next_token_requests(5, 500);
    let (_, page) = stack.connect("other@example.com", Decision::allow()).await;
    assert_eq!(page.status, 502, "{}", page.body);
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::TokenExchangeFailed);
}

#[tokio::test]
async fn reconnecting_updates_in_place() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    for _ in 0..2 {
        let (_, page) = stack.connect("user@example.com", Decision::allow()).await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    assert_eq!(
        stack.calendars().await.len(),
        1,
        "no duplicate calendar entries"
    );
    let events = stack.events::<ConnectionSucceeded>(WAIT).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].payload.calendar_id, events[1].payload.calendar_id);
    let auth = stack.google_auth("user@example.com").await.expect("stored");
    assert_eq!(auth.get_i64("tokenVersion").expect("version"), 2);
}

#[tokio::test]
async fn frontend_redirect_carries_only_the_outcome() {
    let stack = OAuthStack::start(
        TestContext::new(),
        &[("FRONTEND_REDIRECT_URL", "https://app.example/done")],
    )
    .await;
    let (_, page) = stack.connect("user@example.com", Decision::allow()).await;
    assert_eq!(page.status, 303);
    let location = page.headers["location"].to_str().expect("ascii");
    assert!(
        location.starts_with("https://app.example/done?status=success&subaccountId="),
        "{location}"
    );
    assert!(!location.contains("ya29"), "{location}");
    let (_, page) = stack.connect("user@example.com", Decision::Deny).await;
    assert_eq!(
        page.headers["location"],
        "https://app.example/done?status=error&reason=access_denied"
    );
}

#[tokio::test]
async fn a_reconnect_without_a_refresh_token_keeps_the_stored_one() {
    let stack = OAuthStack::start(TestContext::new(), &[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    let allow = || Decision::Allow {
        account: Some("person@gmail.example".into()),
        scopes: None,
    };
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let first = stack
        .google_auth("person@gmail.example")
        .await
        .expect("stored");

    // The provider sends no refresh token this time.
    stack.google.withhold_refresh_tokens(true);
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let second = stack
        .google_auth("person@gmail.example")
        .await
        .expect("stored");
    assert_eq!(second.get_i64("tokenVersion").expect("version"), 2);
    assert!(
        second.get_document("refreshToken").is_ok(),
        "refresh token dropped"
    );
    // Re-encrypted on the write (a new nonce) ...
    assert_ne!(
        first.get_document("refreshToken").expect("first"),
        second.get_document("refreshToken").expect("second")
    );
    assert_eq!(second.get_bool("noRefreshToken"), Ok(false));
    // ... and still the working token: the stale access token is refreshed with it.
    stack.expire_access_token("person@gmail.example").await;
    match stack.access_token("person@gmail.example").await {
        schemas::events::AccessTokenReply::Issued { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.google.token_requests("refresh_token"), 1);
}

#[tokio::test]
async fn an_identity_without_email_verified_counts_as_unverified() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    stack.google.omit_email_verified(true);
    let (_, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: Some("person@gmail.example".into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(stack.google_auth("person@gmail.example").await.is_none());
    assert!(stack.calendars().await.is_empty());
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::IdentityUnavailable);
    assert!(
        failed[0].payload.message.contains("email_not_verified"),
        "{}",
        failed[0].payload.message
    );
}

#[tokio::test]
async fn a_token_response_without_scope_is_refused_unless_the_provider_is_known_to_omit_it() {
    let allow = || Decision::Allow {
        account: Some("person@gmail.example".into()),
        scopes: None,
    };
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    stack.google.omit_token_response_scope(true);
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(stack.google_auth("person@gmail.example").await.is_none());
    let failed = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::ProviderError);
    assert!(
        failed[0].payload.message.contains("scopes"),
        "{}",
        failed[0].payload.message
    );

    // Configured for a provider that omits it: granted as requested.
    let omits = OAuthStack::start(
        TestContext::new(),
        &[("OAUTH_TOKEN_RESPONSE_OMITS_SCOPE", "true")],
    )
    .await;
    omits.google.omit_token_response_scope(true);
    let (_, page) = omits.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let auth = omits
        .google_auth("person@gmail.example")
        .await
        .expect("stored");
    let scopes = auth.get_array("scopes").expect("scopes");
    assert!(scopes.iter().any(|s| s.as_str() == Some(CALENDAR)));
}

#[tokio::test]
async fn fifty_concurrent_new_accounts_never_exceed_the_account_cap() {
    const CAP: usize = 4;
    let stack = OAuthStack::start(
        TestContext::new(),
        &[
            ("MAX_GOOGLE_ACCOUNTS", "4"),
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "1000/1m"),
        ],
    )
    .await;
    // Fifty consents of fifty different accounts, their callbacks not followed yet.
    let mut callbacks = Vec::new();
    for i in 0..50 {
        let (_, auth_url) = stack.issue_link("user@example.com").await;
        let decision = Decision::Allow {
            account: Some(format!("account{i}@gmail.example")),
            scopes: None,
        };
        callbacks.push(stack.consent(&auth_url, decision).await);
    }
    let pages = futures::future::join_all(callbacks.iter().map(|url| stack.open(url))).await;
    let connected = pages.iter().filter(|p| p.status == 200).count();
    for refused in pages.iter().filter(|p| p.status != 200) {
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(
            refused.body.contains("Too many Google accounts"),
            "{}",
            refused.body
        );
    }
    assert_eq!(connected, CAP, "exactly the cap is connected");
    let auths = stack
        .tenant()
        .await
        .collection::<bson::Document>("googleauths");
    assert_eq!(
        auths.count_documents(bson::doc! {}).await.expect("count"),
        CAP as u64
    );
    let active = stack
        .calendars()
        .await
        .iter()
        .filter(|c| c.get_bool("isActive") == Ok(true))
        .count();
    assert_eq!(
        active, CAP,
        "refused accounts leave no active calendar entry"
    );
    let refused = stack
        .events::<ConnectionFailed>(WAIT)
        .await
        .into_iter()
        .filter(|e| e.payload.reason == FailureReason::AccountLimitReached)
        .count();
    assert_eq!(refused, 50 - CAP);

    // Accounts stored before places existed count too: with their places removed and one
    // account gone, ten concurrent new accounts get exactly the one place left.
    let mut legacy: Vec<bson::Document> = Vec::new();
    let mut cursor = auths.find(bson::doc! {}).await.expect("find");
    while let Some(mut doc) = futures::TryStreamExt::try_next(&mut cursor)
        .await
        .expect("read")
    {
        doc.remove("slot");
        legacy.push(doc);
    }
    legacy.pop(); // one account gone
    auths.delete_many(bson::doc! {}).await.expect("delete");
    auths.insert_many(legacy).await.expect("legacy accounts");
    let mut callbacks = Vec::new();
    for i in 0..10 {
        let (_, auth_url) = stack.issue_link("user@example.com").await;
        let decision = Decision::Allow {
            account: Some(format!("later{i}@gmail.example")),
            scopes: None,
        };
        callbacks.push(stack.consent(&auth_url, decision).await);
    }
    let pages = futures::future::join_all(callbacks.iter().map(|url| stack.open(url))).await;
    assert_eq!(pages.iter().filter(|p| p.status == 200).count(), 1);
    assert_eq!(
        auths.count_documents(bson::doc! {}).await.expect("count"),
        CAP as u64
    );
    // A stored account reconnects whether it has a place or not.
    let stored = auths
        .find_one(bson::doc! {})
        .await
        .expect("find")
        .expect("one");
    let (_, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: Some(stored.get_str("googleEmail").expect("email").into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
}
