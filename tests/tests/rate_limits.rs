//! Abuse limits on real infrastructure: every limit answers 429 with `Retry-After` and the
//! limit's name, stores and sends nothing, and lets requests through again once it has
//! refilled; limits are shared by every replica; a flood by one tenant leaves another's
//! email on time; and a Redis outage gets the documented answers, not a storm of errors.

mod api_support;
mod oauth_support;

use std::time::{Duration, Instant};

use api_support::{Api, Reply, connect_path, token};
use e2e::TestContext;
use e2e::fake_google::Decision;
use e2e::servers::RedisServer;
use e2e::smtp::SmtpSink;
use oauth_support::OAuthStack;
use reqwest::Method;
use schemas::events::AuthLinkIssued;
use serde_json::{Value, json};

const SUB_A: &str = oauth_support::SUBACCOUNT;
const SUB_B: &str = "5f1e0c9a2b3d4e5f60718293";
/// A subaccount without a `google-calendar` connector.
const NO_CONNECTOR: &str = "0123456789abcdef01234567";

fn connect_body(user_email: &str, send_email: bool) -> Value {
    json!({ "userEmail": user_email, "sendEmail": send_email })
}

async fn connect(api: &Api, subaccount: &str, user_email: &str, send_email: bool) -> Reply {
    api.post(
        &connect_path(subaccount),
        Some(&token(subaccount)),
        &connect_body(user_email, send_email),
    )
    .await
}

/// The `Retry-After` of a 429, after checking the answer is the documented one for `limit`.
fn assert_limited(reply: &Reply, limit: &str) -> u64 {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.code(), "rate_limited", "{}", reply.body);
    assert_eq!(reply.body["success"], false);
    let details = &reply.body["error"]["details"];
    assert_eq!(details["limit"], limit, "{}", reply.body);
    let header: u64 = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", reply.headers));
    assert!(header >= 1);
    assert_eq!(details["retryAfterSeconds"].as_u64(), Some(header));
    assert!(
        reply.message().contains(limit) && reply.message().contains("at most"),
        "the message names the limit and its rule: {}",
        reply.message()
    );
    header
}

/// OAuth states this test's oauth-worker holds in Redis.
async fn stored_states(stack: &OAuthStack) -> usize {
    let mut redis = stack.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(stack.state_key("*"))
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    keys.len()
}

/// The oauth-worker (with the fake Google) and an api on one context, both with `limits`,
/// and a `google-calendar` connector for both test subaccounts.
async fn stack_with_api(limits: &[(&str, &str)]) -> (OAuthStack, Api) {
    let stack = OAuthStack::start(TestContext::new(), limits).await;
    let api = Api::start_in(stack.ctx.clone(), limits).await;
    api.seed_google_calendar(SUB_A).await;
    api.seed_google_calendar(SUB_B).await;
    (stack, api)
}

#[tokio::test]
async fn connect_limit_answers_429_stores_nothing_and_resets() {
    let limits = [("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "3/3s")];
    let (stack, api) = stack_with_api(&limits).await;
    for _ in 0..3 {
        let reply = connect(&api, SUB_A, "user@example.com", false).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let refused = connect(&api, SUB_A, "user@example.com", false).await;
    let retry_after = assert_limited(&refused, "connect_per_subaccount");
    assert!(
        retry_after <= 1,
        "one request refills in 1 s: {retry_after}"
    );
    assert!(
        refused.headers.contains_key("x-correlation-id"),
        "a refused connect still carries its correlation id"
    );
    assert_eq!(
        stored_states(&stack).await,
        3,
        "the refused request stored no state"
    );
    // Another subaccount has its own budget.
    assert_eq!(
        connect(&api, SUB_B, "user@example.com", false).await.status,
        200
    );
    // Once Retry-After has passed, the limit lets one more through.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = connect(&api, SUB_A, "user@example.com", false).await;
    assert_eq!(again.status, 200, "{}", again.body);

    // Requests for a connector that does not exist never reach the oauth-worker; the api
    // charges them to the same budget.
    for _ in 0..3 {
        assert_eq!(
            connect(&api, NO_CONNECTOR, "user@example.com", false)
                .await
                .status,
            404
        );
    }
    assert_limited(
        &connect(&api, NO_CONNECTOR, "user@example.com", false).await,
        "connect_per_subaccount",
    );
}

#[tokio::test]
async fn email_limits_hold_per_subaccount_and_per_recipient_across_subaccounts() {
    let limits = [
        ("RATE_LIMIT_EMAILS_PER_SUBACCOUNT", "3/1h"),
        ("RATE_LIMIT_EMAILS_PER_RECIPIENT", "2/1h"),
    ];
    let (stack, api) = stack_with_api(&limits).await;
    for _ in 0..2 {
        let reply = connect(&api, SUB_A, "person@example.com", true).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["data"]["emailSent"], true);
    }
    // A third email to the same person, from another tenant and spelled differently.
    let refused = connect(&api, SUB_B, "Person@Example.com", true).await;
    let wait = assert_limited(&refused, "emails_per_recipient");
    assert!(
        (1700..=1800).contains(&wait),
        "2 per hour refill one every 30 min: {wait}"
    );
    // Or with a domain spelled in letters IDNA maps to the same name (the mail goes to
    // person@example.com all the same).
    let refused = connect(&api, SUB_B, "person@ＥＸＡＭＰＬＥ.com", true).await;
    assert_limited(&refused, "emails_per_recipient");
    // The link alone (no email) is not an email.
    assert_eq!(
        connect(&api, SUB_B, "person@example.com", false)
            .await
            .status,
        200
    );
    // Tenant A's third email to someone else is its last this hour.
    assert_eq!(
        connect(&api, SUB_A, "other@example.com", true).await.status,
        200
    );
    let refused = connect(&api, SUB_A, "third@example.com", true).await;
    assert_limited(&refused, "emails_per_subaccount");
    // Exactly the three allowed emails were queued for the mailer; nothing for the refusals.
    let queued = stack.events::<AuthLinkIssued>(Duration::from_secs(5)).await;
    assert_eq!(queued.len(), 3, "{queued:?}");
}

#[tokio::test]
async fn live_state_cap_refuses_until_a_link_is_used() {
    let limits = [("MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT", "2")];
    let (stack, api) = stack_with_api(&limits).await;
    let first = connect(&api, SUB_A, "user@example.com", false).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        connect(&api, SUB_A, "user@example.com", false).await.status,
        200
    );
    let refused = connect(&api, SUB_A, "user@example.com", false).await;
    let wait = assert_limited(&refused, "live_states_per_subaccount");
    assert!(
        (500..=600).contains(&wait),
        "the oldest link expires in about 10 minutes: {wait}"
    );
    assert_eq!(stored_states(&stack).await, 2);
    // Using a link frees its place at once.
    let auth_url = first.body["data"]["authUrl"].as_str().expect("authUrl");
    let callback = stack.consent(auth_url, Decision::allow()).await;
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let after = connect(&api, SUB_A, "user@example.com", false).await;
    assert_eq!(after.status, 200, "{}", after.body);
}

#[tokio::test]
async fn limits_are_shared_by_every_api_and_oauth_worker_replica() {
    let limits = [
        ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "4/1h"),
        ("RATE_LIMIT_WEBHOOK_MANAGEMENT_PER_CALLER", "4/1h"),
    ];
    let (stack, first) = stack_with_api(&limits).await;
    // A second api and a second oauth-worker: nothing shared with the first but Redis.
    let second = Api::start_in(stack.ctx.clone(), &limits).await;
    let _replica = stack.replica(&limits).await;
    let apis = [&first, &second];
    for i in 0..4 {
        let reply = connect(apis[i % 2], SUB_A, "user@example.com", false).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
    }
    for api in apis {
        assert_limited(
            &connect(api, SUB_A, "user@example.com", false).await,
            "connect_per_subaccount",
        );
    }
    let webhooks = format!("/api/connectors/{SUB_A}/webhooks");
    for i in 0..4 {
        let reply = apis[i % 2].get(&webhooks, Some(&token(SUB_A))).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
    }
    for api in apis {
        assert_limited(
            &api.get(&webhooks, Some(&token(SUB_A))).await,
            "webhook_management_per_caller",
        );
    }
}

#[tokio::test]
async fn dev_helpers_are_limited_per_client_address() {
    let api = Api::start(&[
        ("API_DEV_MODE", "true"),
        ("RATE_LIMIT_DEV_PER_CLIENT", "3/1h"),
    ])
    .await;
    let body = json!({ "subaccountId": SUB_A });
    assert_eq!(api.get("/", None).await.status, 200);
    assert_eq!(api.post("/dev/token", None, &body).await.status, 200);
    assert_eq!(api.get("/dev/page.js", None).await.status, 200);
    // The client's fourth request of the hour, whatever the route; a forwarded address
    // claiming to be someone else changes nothing.
    let refused = reply_with_header(&api, "/dev/token", "x-forwarded-for", "198.51.100.7").await;
    assert_limited(&refused, "dev_per_client");
    assert_limited(&api.get("/", None).await, "dev_per_client");
}

async fn reply_with_header(api: &Api, path: &str, name: &str, value: &str) -> Reply {
    api_support::reply(
        api.request(Method::POST, path)
            .header(name, value)
            .json(&json!({ "subaccountId": SUB_A })),
    )
    .await
}

/// Tenant A asks for links as fast as it can for 10 s while tenant B asks for one in the
/// middle: A gets no more emails than its limit allows, and B's email arrives within
/// [`B_EMAIL_BOUND`] with a link that still works.
#[tokio::test]
async fn a_flooding_tenant_gets_its_limit_and_another_tenant_its_email_on_time() {
    const FLOOD: Duration = Duration::from_secs(10);
    const B_EMAIL_BOUND: Duration = Duration::from_secs(5);
    // The defaults: 60 connects a minute and 100 emails an hour per subaccount.
    let (stack, api) = stack_with_api(&[]).await;
    let sink = SmtpSink::start();
    // A slow mail server: every message takes 50 ms to be accepted.
    sink.delay_acceptance(Duration::from_millis(50));
    let smtp_url = sink.url();
    let mailer_config: mailer_worker::MailerWorkerConfig =
        stack.ctx.config(&[("SMTP_URL", smtp_url.as_str())]);
    let mut mailer = e2e::RunningService::start(mailer_worker::SERVICE, |l, s| {
        mailer_worker::run(mailer_config, l, s)
    })
    .await;
    mailer.wait_ready(Duration::from_secs(30)).await;

    let api = std::sync::Arc::new(api);
    let started = Instant::now();
    let mut flooders = Vec::new();
    for worker in 0..8 {
        let api = api.clone();
        flooders.push(tokio::spawn(async move {
            let (mut sent, mut limited, mut other) = (0u32, 0u32, 0u32);
            let mut n = 0u32;
            while started.elapsed() < FLOOD {
                n += 1;
                let to = format!("victim-{worker}-{n}@example.com");
                let reply = connect(&api, SUB_A, &to, true).await;
                match reply.status {
                    200 if reply.body["data"]["emailSent"] == true => sent += 1,
                    429 => limited += 1,
                    _ => other += 1,
                }
            }
            (sent, limited, other)
        }));
    }
    tokio::time::sleep(FLOOD / 2).await;
    let asked = Instant::now();
    let b = connect(&api, SUB_B, "b-user@example.com", true).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["data"]["emailSent"], true);
    let b_email = loop {
        let found = sink
            .messages()
            .into_iter()
            .find(|m| m.to.iter().any(|to| to == "b-user@example.com"));
        if let Some(found) = found {
            break found;
        }
        assert!(
            asked.elapsed() < B_EMAIL_BOUND,
            "tenant B's email did not arrive within {B_EMAIL_BOUND:?} of its request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let b_latency = asked.elapsed();
    let (mut sent, mut limited, mut other) = (0, 0, 0);
    for flooder in flooders {
        let (s, l, o) = flooder.await.expect("flooder");
        sent += s;
        limited += l;
        other += o;
    }
    eprintln!(
        "flood: tenant A had {sent} emails queued, {limited} requests refused with 429, \
         {other} other answers in {FLOOD:?}; tenant B's email arrived {b_latency:?} after its request"
    );
    assert_eq!(other, 0, "every flood request got a link or a 429");
    assert!(limited > 0, "the flood went past the limit");
    // A burst of 100, plus at most one refill (36 s apart) in 10 s.
    assert!(sent <= 101, "tenant A queued {sent} emails");
    // B's link, as it arrived, still works.
    let link = b.body["data"]["authUrl"].as_str().expect("authUrl");
    let state = url::Url::parse(link)
        .expect("authUrl")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let text = b_email.text().expect("text part");
    // The email leads to B's consent page, for B's state, which leads on to authUrl.
    assert!(
        text.contains(&format!("/api/google/consent?state={state}")),
        "B's email holds B's link:
{text}"
    );
    let callback = stack.consent(link, Decision::allow()).await;
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 200, "B's link works: {}", page.body);
    // Every email A was told about arrives, and no more.
    let a_emails = sink
        .wait_for_messages(sent as usize + 1, Duration::from_secs(60))
        .await
        .iter()
        .filter(|m| m.to.iter().any(|to| to.starts_with("victim-")))
        .count();
    assert_eq!(a_emails, sent as usize);
    mailer.stop().await.expect("mailer stops");
}

/// With Redis down: links (and so emails) cannot be issued and say so quickly with 503 and
/// `Retry-After`; the per-caller limits let requests through; nothing answers 500; when Redis
/// is back, connect works again by itself.
#[tokio::test]
async fn a_redis_outage_gets_the_documented_answers_and_recovery() {
    let mut redis = RedisServer::start();
    let mut ctx = TestContext::new();
    ctx.redis_url = redis.url();
    let stack = OAuthStack::start(ctx, &[]).await;
    let api = Api::start_in(stack.ctx.clone(), &[]).await;
    api.seed_google_calendar(SUB_A).await;
    let webhooks = format!("/api/connectors/{SUB_A}/webhooks");
    assert_eq!(
        connect(&api, SUB_A, "user@example.com", true).await.status,
        200
    );
    let emails_before = stack
        .events::<AuthLinkIssued>(Duration::from_secs(5))
        .await
        .len();

    redis.stop();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let reply = connect(&api, SUB_A, &format!("user{i}@example.com"), true).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "connect answered in {took:?}"
        );
        if reply.status == 503 {
            assert_eq!(reply.code(), "state_store_unavailable", "{}", reply.body);
            assert_eq!(
                reply.headers.get("retry-after").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
        }
        statuses.push(reply.status);
        // Webhook management fails open: its limit cannot be decided, the request is served.
        let started = Instant::now();
        let listed = api.get(&webhooks, Some(&token(SUB_A))).await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert!(
        statuses.iter().all(|s| *s == 503),
        "no link without Redis: {statuses:?}"
    );
    let emails_during = stack.events::<AuthLinkIssued>(Duration::ZERO).await.len();
    assert_eq!(emails_during, emails_before, "email sending fails closed");
    let metrics = reply_text(&api, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rate_limit_unavailable_total")
                && l.contains("webhook_management_per_caller")),
        "the fallback is counted"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = connect(&api, SUB_A, "back@example.com", true).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(
            Instant::now() < deadline,
            "connect did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn reply_text(api: &Api, path: &str) -> String {
    let reply = api_support::reply(api.request(Method::GET, path)).await;
    match reply.body {
        Value::String(text) => text,
        other => other.to_string(),
    }
}
