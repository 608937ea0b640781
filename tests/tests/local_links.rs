//! Links the api issues itself (`api/src/local_links.rs`): once an oauth-worker's reply handed
//! it the link settings, a connect request with `sendEmail: false` is answered without a NATS
//! round trip to the worker, and the link it returns is one the worker's callback completes,
//! held to the worker's limits. Real NATS, Redis, MongoDB-wire server and the fake Google.

mod api_support;
mod oauth_support;

use std::collections::HashMap;
use std::time::Duration;

use api_support::{Api, Reply, connect_path, token};
use e2e::TestContext;
use e2e::fake_google::Decision;
use futures::StreamExt;
use oauth_support::{OAuthStack, SUBACCOUNT, query};
use redis::AsyncCommands;
use schemas::events::ConnectionSucceeded;
use schemas::subjects::headers;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The connect requests that reach NATS, as a plain (not queue-group) subscriber sees them:
/// `true` for one that asked for the link settings.
struct WorkerRequests(async_nats::Subscriber);

impl WorkerRequests {
    async fn watch(stack: &OAuthStack) -> Self {
        let subscriber = stack
            .nats
            .subscribe(stack.ns.connect_requested())
            .await
            .expect("subscribe");
        stack.nats.flush().await.expect("flush");
        Self(subscriber)
    }

    /// The requests seen within `within`.
    async fn seen(&mut self, within: Duration) -> Vec<bool> {
        let mut seen = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(within, self.0.next()).await {
            let wanted = message
                .headers
                .as_ref()
                .is_some_and(|h| h.get(headers::LINK_SETTINGS_WANTED).is_some());
            seen.push(wanted);
        }
        seen
    }
}

async fn connect(api: &Api, send_email: bool) -> Reply {
    api.post(
        &connect_path(SUBACCOUNT),
        Some(&token(SUBACCOUNT)),
        &json!({"userEmail": "user@example.com", "sendEmail": send_email}),
    )
    .await
}

fn auth_url(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"]["authUrl"]
        .as_str()
        .expect("authUrl")
        .to_owned()
}

/// A link's parameters except the two that are new for every link.
fn fixed_parameters(url: &str) -> HashMap<String, String> {
    let mut q = query(url);
    assert_eq!(q.remove("state").map(|s| s.len()), Some(43), "{url}");
    assert_eq!(
        q.remove("code_challenge").map(|c| c.len()),
        Some(43),
        "{url}"
    );
    q
}

#[tokio::test]
async fn once_it_knows_the_settings_the_api_issues_unmailed_links_the_worker_completes() {
    let ctx = TestContext::new();
    let stack = OAuthStack::start(ctx.clone(), &[]).await;
    let api = Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let mut requests = WorkerRequests::watch(&stack).await;

    // The first asks the worker, and for its settings.
    let first = auth_url(&connect(&api, false).await);
    assert_eq!(requests.seen(Duration::from_millis(300)).await, vec![true]);

    // The next ones never reach NATS.
    let second = connect(&api, false).await;
    let local = auth_url(&second);
    assert_eq!(
        second.body["message"],
        "Authorization link created for user@example.com"
    );
    assert_eq!(second.body["data"]["emailSent"], false);
    let _ = auth_url(&connect(&api, false).await);
    assert_eq!(
        requests.seen(Duration::from_millis(300)).await,
        Vec::<bool>::new()
    );
    // The same link the worker would have built: client, redirect, scopes, offline access.
    assert_eq!(fixed_parameters(&local), fixed_parameters(&first));
    assert_ne!(query(&local)["state"], query(&first)["state"]);

    // The attempt is stored as the worker stores it, under the request's correlation id.
    let mut redis = stack.redis().await;
    let stored: String = redis
        .get(stack.state_key(&query(&local)["state"]))
        .await
        .expect("the attempt is in Redis");
    let attempt: serde_json::Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(attempt["subaccountId"], SUBACCOUNT);
    assert_eq!(attempt["userEmail"], "user@example.com");
    assert_eq!(attempt["authUrl"], local.as_str());
    assert_eq!(
        attempt["correlationId"].as_str(),
        header(&second, "x-correlation-id").as_deref()
    );

    // The worker's callback completes it.
    let callback = stack.consent(&local, Decision::allow()).await;
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let succeeded = stack.events::<ConnectionSucceeded>(WAIT).await;
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(
        succeeded[0].correlation_id.to_string(),
        header(&second, "x-correlation-id").expect("correlation id")
    );

    // An emailed link is still the worker's (it owns the outbox); and it does not ask for
    // the settings it has.
    let emailed = connect(&api, true).await;
    assert_eq!(emailed.status, 200, "{}", emailed.body);
    assert_eq!(emailed.body["data"]["emailSent"], true);
    assert_eq!(requests.seen(Duration::from_millis(300)).await, vec![false]);
}

#[tokio::test]
async fn settings_older_than_the_ttl_are_asked_for_again_and_zero_turns_local_links_off() {
    let ctx = TestContext::new();
    let stack = OAuthStack::start(ctx.clone(), &[]).await;
    let api = Api::start_in(ctx.clone(), &[("LINK_SETTINGS_TTL", "1s")]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let mut requests = WorkerRequests::watch(&stack).await;
    let _ = auth_url(&connect(&api, false).await);
    let _ = auth_url(&connect(&api, false).await);
    assert_eq!(requests.seen(Duration::from_millis(300)).await, vec![true]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = auth_url(&connect(&api, false).await);
    let _ = auth_url(&connect(&api, false).await);
    assert_eq!(requests.seen(Duration::from_millis(300)).await, vec![true]);
    api.service.stop().await.expect("clean stop");

    let off = Api::start_in(ctx.clone(), &[("LINK_SETTINGS_TTL", "0s")]).await;
    for _ in 0..3 {
        let _ = auth_url(&connect(&off, false).await);
    }
    assert_eq!(
        requests.seen(Duration::from_millis(300)).await,
        vec![false, false, false]
    );
}

#[tokio::test]
async fn links_the_api_issues_are_held_to_the_workers_limits() {
    let ctx = TestContext::new();
    // The worker's limits, not the api's own setting of the same name, decide.
    let stack = OAuthStack::start(
        ctx.clone(),
        &[
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "3/1h"),
            ("MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT", "10"),
        ],
    )
    .await;
    let api = Api::start_in(
        ctx.clone(),
        &[("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "100/1m")],
    )
    .await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let mut requests = WorkerRequests::watch(&stack).await;
    for _ in 0..3 {
        let _ = auth_url(&connect(&api, false).await);
    }
    let refused = connect(&api, false).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "rate_limited");
    assert_eq!(
        refused.body["error"]["details"]["limit"],
        "connect_per_subaccount"
    );
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 3 per 1h")),
        "{}",
        refused.body
    );
    assert!(header(&refused, "retry-after").is_some());
    // Only the first request reached the worker; the refusal stored nothing.
    assert_eq!(requests.seen(Duration::from_millis(300)).await, vec![true]);
    let mut redis = stack.redis().await;
    let live: usize = redis.zcard(live_states_key(&stack)).await.expect("zcard");
    assert_eq!(live, 3);
}

/// The subaccount's live-state set, named as `RedisKeys` names it.
fn live_states_key(stack: &OAuthStack) -> String {
    format!("{}:oauth:live-states:{SUBACCOUNT}", stack.ctx.id)
}

fn header(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
