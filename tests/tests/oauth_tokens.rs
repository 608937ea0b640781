//! The token lifecycle over real NATS, Redis and the MongoDB-wire server against the fake
//! Google: access tokens for other services, single-flight refresh across replicas,
//! `invalid_grant` → reauth required, a grant without a refresh token → `no_refresh_token`,
//! short-lived tokens, key rotation, and the outbox surviving a NATS outage.

mod oauth_support;

use std::time::Duration;

use e2e::TestContext;
use e2e::fake_google::Decision;
use e2e::servers::NatsServer;
use oauth_support::{KEY_A, KEY_B, OAuthStack, access_token_via};
use schemas::events::{
    AccessTokenRejectionCode, AccessTokenReply, ConnectionFailed, ConnectionSucceeded,
    FailureReason,
};

const EMAIL: &str = "person@gmail.example";

fn allow() -> Decision {
    Decision::Allow {
        account: Some(EMAIL.into()),
        scopes: None,
    }
}

fn issued(reply: AccessTokenReply) -> String {
    match reply {
        AccessTokenReply::Issued { access_token, .. } => access_token,
        other => panic!("no token: {other:?}"),
    }
}

async fn userinfo_works(stack: &OAuthStack, token: &str) -> bool {
    reqwest::Client::new()
        .get(stack.google.userinfo_url())
        .bearer_auth(token)
        .send()
        .await
        .expect("userinfo")
        .status()
        .is_success()
}

#[tokio::test]
async fn access_tokens_come_from_the_store_then_the_cache_and_refresh_when_stale() {
    let stack = OAuthStack::start(TestContext::new(), &[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);

    let first = issued(stack.access_token(EMAIL).await);
    assert!(userinfo_works(&stack, &first).await);
    assert_eq!(issued(stack.access_token(EMAIL).await), first);
    assert_eq!(stack.google.token_requests("refresh_token"), 0);

    // Unknown accounts are named as such.
    match stack.access_token("nobody@gmail.example").await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::NotConnected)
        }
        other => panic!("{other:?}"),
    }

    // A token closer to expiry than the margin is refreshed (once), then cached.
    let stale = OAuthStack::start(TestContext::new(), &[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    stale.connect("user@example.com", allow()).await;
    stale.expire_access_token(EMAIL).await;
    let refreshed = issued(stale.access_token(EMAIL).await);
    assert!(userinfo_works(&stale, &refreshed).await);
    assert_eq!(issued(stale.access_token(EMAIL).await), refreshed);
    assert_eq!(stale.google.token_requests("refresh_token"), 1);
    let auth = stale.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_i64("tokenVersion").expect("version"), 2);
    assert!(!format!("{auth:?}").contains(&refreshed), "stored in clear");
}

#[tokio::test]
async fn two_replicas_refresh_a_token_once() {
    let stack = OAuthStack::start(TestContext::new(), &[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    let replica = stack.replica(&[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    stack.connect("user@example.com", allow()).await;
    stack.expire_access_token(EMAIL).await;
    // Slow enough that the requests overlap at the provider.
    stack.google.set_latency(Duration::from_millis(300));

    let subaccount = stack.subaccount();
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let nats = stack.nats.clone();
            let ns = stack.ns.clone();
            let subaccount = subaccount.clone();
            tokio::spawn(async move { access_token_via(&nats, &ns, &subaccount, EMAIL).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for request in requests {
        tokens.push(issued(request.await.expect("task")));
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every caller got the same new token");
    assert_eq!(stack.google.token_requests("refresh_token"), 1);
    replica.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_revoked_refresh_token_marks_the_account_reauth_required() {
    let stack = OAuthStack::start(TestContext::new(), &[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    stack.connect("user@example.com", allow()).await;
    stack.expire_access_token(EMAIL).await;
    assert_eq!(stack.google.revoke_refresh_tokens_of(EMAIL), 1);

    for _ in 0..2 {
        match stack.access_token(EMAIL).await {
            AccessTokenReply::Rejected { code, message } => {
                assert_eq!(code, AccessTokenRejectionCode::ReauthRequired);
                assert!(!message.contains("1//"), "a token leaked: {message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // The second ask did not try the provider again.
    assert_eq!(stack.google.token_requests("refresh_token"), 1);
    let auth = stack.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_str("status").expect("status"), "reauth_required");
    let failed = stack
        .events::<ConnectionFailed>(Duration::from_secs(5))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::ReauthRequired);
    assert_eq!(failed[0].payload.google_email.as_deref(), Some(EMAIL));
}

#[tokio::test]
async fn a_short_lived_token_is_served_from_the_vault_without_a_refresh_on_every_call() {
    // The default margin (2m) is longer than the token's whole life (30 s): it is clamped to
    // half the lifetime, so the token is handed out, not refreshed on every request.
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    stack
        .google
        .set_access_token_lifetime(Duration::from_secs(30));
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);

    let first = issued(stack.access_token(EMAIL).await);
    let second = issued(stack.access_token(EMAIL).await);
    assert_eq!(first, second);
    assert_eq!(stack.google.token_requests("refresh_token"), 0);
    assert!(userinfo_works(&stack, &second).await);
}

#[tokio::test]
async fn a_grant_without_a_refresh_token_answers_no_refresh_token_once_expired() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    stack.google.withhold_refresh_tokens(true);
    let (_, page) = stack.connect("user@example.com", allow()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let auth = stack.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_bool("noRefreshToken"), Ok(true), "{auth:?}");
    assert!(auth.get("refreshToken").is_none());

    // Usable while the access token lives.
    issued(stack.access_token(EMAIL).await);
    stack.expire_access_token(EMAIL).await;
    for _ in 0..2 {
        match stack.access_token(EMAIL).await {
            AccessTokenReply::Rejected { code, message } => {
                assert_eq!(code, AccessTokenRejectionCode::NoRefreshToken);
                assert!(message.contains("without a refresh token"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Nothing was tried at the provider; the account is marked and announced once.
    assert_eq!(stack.google.token_requests("refresh_token"), 0);
    let auth = stack.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_str("status").expect("status"), "reauth_required");
    let failed = stack
        .events::<ConnectionFailed>(Duration::from_secs(5))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::ReauthRequired);
    assert!(
        failed[0].payload.message.contains("no refresh token"),
        "{}",
        failed[0].payload.message
    );

    // A grant with one says so too.
    let other = OAuthStack::start(TestContext::new(), &[]).await;
    other.connect("user@example.com", allow()).await;
    let auth = other.google_auth(EMAIL).await.expect("stored");
    assert_eq!(auth.get_bool("noRefreshToken"), Ok(false), "{auth:?}");
}

#[tokio::test]
async fn tokens_written_with_an_old_key_still_work_and_move_to_the_new_key() {
    let stack = OAuthStack::start(TestContext::new(), &[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    stack.connect("user@example.com", allow()).await;
    stack.expire_access_token(EMAIL).await;
    let before = stack.google_auth(EMAIL).await.expect("stored");
    let key_of = |doc: &bson::Document, field: &str| {
        doc.get_document(field)
            .expect("encrypted")
            .get_str("keyId")
            .expect("key id")
            .to_owned()
    };
    assert_eq!(key_of(&before, "refreshToken"), "a");

    // Rotate: B is current, A still decrypts.
    let keys = format!("{KEY_A},{KEY_B}");
    let stack = stack
        .restart_worker(&[
            ("ACCESS_TOKEN_MARGIN", "1m"),
            ("TOKEN_ENCRYPTION_KEYS", &keys),
            ("TOKEN_ENCRYPTION_KEY_ID", "b"),
        ])
        .await;
    let token = issued(stack.access_token(EMAIL).await);
    assert!(userinfo_works(&stack, &token).await);
    let after = stack.google_auth(EMAIL).await.expect("stored");
    assert_eq!(key_of(&after, "accessToken"), "b");
    assert_eq!(key_of(&after, "refreshToken"), "b", "re-encrypted on write");

    // A worker that no longer has key B cannot read the record: it says so, leaks nothing.
    let stack = stack.restart_worker(&[("ACCESS_TOKEN_MARGIN", "1m")]).await;
    let mut redis = stack.redis().await;
    let _: () = redis::AsyncCommands::del(
        &mut redis,
        format!(
            "{}:token:access:{}:{}",
            stack.ctx.id,
            oauth_support::SUBACCOUNT,
            EMAIL
        ),
    )
    .await
    .expect("drop cache");
    match stack.access_token(EMAIL).await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::Unavailable)
        }
        AccessTokenReply::Issued { .. } => {
            // Still cached under another key name: acceptable only if the cache is encrypted
            // with a key this worker has, which it is not.
            panic!("a worker without the key handed out a token")
        }
    }
}

#[tokio::test]
async fn the_connection_event_survives_a_nats_outage_during_the_callback() {
    let mut nats = NatsServer::start();
    let mut ctx = TestContext::new();
    ctx.nats_url = nats.url();
    let stack = OAuthStack::start(ctx, &[]).await;
    let (_, auth_url) = stack.issue_link("user@example.com").await;
    let callback = stack.consent(&auth_url, allow()).await;

    nats.stop();
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let pending = stack.google_auth(EMAIL).await.expect("tokens stored");
    assert!(
        pending.get_document("pendingEvent").is_ok(),
        "event kept in the outbox"
    );

    nats.restart();
    let events = stack
        .events::<ConnectionSucceeded>(Duration::from_secs(30))
        .await;
    assert_eq!(
        events.len(),
        1,
        "published once NATS was back, exactly once"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let auth = stack.google_auth(EMAIL).await.expect("stored");
        if auth.get("pendingEvent").is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never cleared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack
            .events::<ConnectionSucceeded>(Duration::from_millis(200))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn an_access_token_request_for_an_unknown_subaccount_creates_no_database() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    let unknown = schemas::SubaccountId::parse("68cf05f060d294db17c06801").expect("id");
    match access_token_via(&stack.nats, &stack.ns, &unknown, EMAIL).await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::NotConnected)
        }
        other => panic!("{other:?}"),
    }
    let names = mongodb::Client::with_uri_str(&stack.ctx.mongodb_uri)
        .await
        .expect("mongo")
        .list_database_names()
        .await
        .expect("list databases");
    let database = format!("{}_{unknown}", stack.ctx.id);
    assert!(!names.contains(&database), "{names:?}");
}

/// The entries of the tenant's `outbox` collection (events with no other document to wait in).
async fn outbox_entries(stack: &OAuthStack) -> Vec<bson::Document> {
    use futures::TryStreamExt;
    stack
        .tenant()
        .await
        .collection::<bson::Document>("outbox")
        .find(bson::doc! {})
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("read")
}

#[tokio::test]
async fn a_connection_failure_survives_a_nats_outage_and_a_restart() {
    let mut nats = NatsServer::start();
    let mut ctx = TestContext::new();
    ctx.nats_url = nats.url();
    let stack = OAuthStack::start(ctx, &[]).await;
    let (_, auth_url) = stack.issue_link("user@example.com").await;
    let callback = stack.consent(&auth_url, Decision::Deny).await;

    nats.stop();
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    let stored = outbox_entries(&stack).await;
    assert_eq!(stored.len(), 1, "stored before the page was answered");
    assert_eq!(stored[0].get_str("eventType"), Ok("connection-failed"));

    // The worker that stored it stops before NATS is back; the next one publishes it.
    let stack = stack
        .restart_worker_after(&[], async { nats.restart() })
        .await;
    let events = stack
        .events::<ConnectionFailed>(Duration::from_secs(30))
        .await;
    assert_eq!(events.len(), 1, "published once NATS was back");
    assert_eq!(events[0].payload.reason, FailureReason::AccessDenied);
    assert_eq!(
        events[0].id.to_string(),
        stored[0].get_str("_id").expect("id")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !outbox_entries(&stack).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never cleared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reauth_required_is_kept_until_the_stream_can_take_it() {
    let stack = OAuthStack::start(TestContext::new(), &[]).await;
    stack.connect("user@example.com", allow()).await;
    assert_eq!(
        stack
            .events::<ConnectionSucceeded>(Duration::from_secs(10))
            .await
            .len(),
        1
    );
    assert_eq!(stack.google.revoke_refresh_tokens_of(EMAIL), 1);

    // The stream is gone when the refresh is refused: the event cannot be published now.
    let js = async_nats::jetstream::new(stack.nats.clone());
    js.delete_stream(stack.ns.events_stream())
        .await
        .expect("stream deleted");
    // Due for a refresh, which the provider refuses: invalid_grant.
    stack.expire_access_token(EMAIL).await;
    match stack.access_token(EMAIL).await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::ReauthRequired)
        }
        other => panic!("{other:?}"),
    }
    let stored = outbox_entries(&stack).await;
    assert_eq!(stored.len(), 1, "stored before the reply");

    // A restart recreates the stream; the relay publishes the kept event.
    let stack = stack.restart_worker_after(&[], async {}).await;
    let failed = stack
        .events::<ConnectionFailed>(Duration::from_secs(30))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload.reason, FailureReason::ReauthRequired);
    assert_eq!(
        failed[0].id.to_string(),
        stored[0].get_str("_id").expect("id")
    );
}

/// A mailed link outlives a Redis crash: with Redis persisting as the local run and compose
/// run it (append-only file, fsync before each answer), the OAuth state written when the link
/// was issued is still there after a SIGKILL and restart, and the consent completes.
#[tokio::test]
async fn a_link_issued_before_a_redis_crash_still_connects_after_it() {
    let mut redis = e2e::servers::RedisServer::start_persistent();
    let mut ctx = TestContext::new();
    ctx.redis_url = redis.url();
    let stack = OAuthStack::start(ctx, &[]).await;
    let (_, auth_url) = stack.issue_link("user@example.com").await;

    redis.crash_and_restart();
    let callback = stack.consent(&auth_url, allow()).await;
    // The worker's connection comes back by itself; give it a moment on a busy machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = stack.open(&callback).await;
        if page.status != 503 || tokio::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        stack.google_auth(EMAIL).await.is_some(),
        "the account is connected"
    );
}
