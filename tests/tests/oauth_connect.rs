//! The oauth-worker's side of the connect flow over real NATS, Redis and JetStream: a connect
//! request gets an authorization URL, the attempt is stored under its state, and the email job
//! is in JetStream before the reply says so.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use e2e::{RunningService, TestContext};
use oauth_worker::OAuthWorkerConfig;
use redis::AsyncCommands;
use schemas::events::{AuthLinkIssued, ConnectRequested, ConnectRequestedReply};
use schemas::subjects::Namespace;
use schemas::{Envelope, SubaccountId, UserEmail};

const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";

async fn start_worker(ctx: &TestContext) -> RunningService {
    start_worker_with(ctx, &[]).await
}

async fn start_worker_with(ctx: &TestContext, extra: &[(&str, &str)]) -> RunningService {
    let mut settings = vec![
        ("GOOGLE_CLIENT_ID", "client-e2e"),
        (
            "GOOGLE_AUTH_URL",
            "https://accounts.example/o/oauth2/v2/auth",
        ),
        ("OAUTH_STATE_TTL", "10m"),
    ];
    settings.extend_from_slice(extra);
    let config: OAuthWorkerConfig = ctx.config(&settings);
    let mut worker = RunningService::start(oauth_worker::SERVICE, |l, s| {
        oauth_worker::run(config, l, s)
    })
    .await;
    worker.wait_ready(Duration::from_secs(30)).await;
    worker
}

async fn connect(
    nats: &async_nats::Client,
    ns: &Namespace,
    email: &str,
    send_email: bool,
) -> (Envelope<ConnectRequested>, ConnectRequestedReply) {
    let request = Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectRequested {
            user_email: UserEmail::parse(email).expect("email"),
            send_email,
            tenant_name: None,
        },
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        nats.request(ns.connect_requested(), request.to_bytes().into()),
    )
    .await
    .expect("answered in time")
    .expect("a responder answered");
    (
        request,
        serde_json::from_slice(&reply.payload).expect("reply decodes"),
    )
}

#[tokio::test]
async fn connect_request_gets_an_auth_url_stores_the_attempt_and_queues_the_email() {
    let ctx = TestContext::new();
    let worker = start_worker(&ctx).await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");

    let (request, reply) = connect(&nats, &ns, "user@example.com", true).await;
    let ConnectRequestedReply::Issued {
        auth_url,
        expires_at,
        email_sent,
        link_settings,
    } = reply
    else {
        panic!("rejected: {reply:?}");
    };
    assert!(email_sent);
    assert_eq!(link_settings, None, "not asked for, not sent");
    let ttl = expires_at - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(9) && ttl <= chrono::Duration::minutes(10),
        "{ttl}"
    );
    let url = url::Url::parse(&auth_url).expect("url");
    assert_eq!(url.host_str(), Some("accounts.example"));
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "client-e2e");
    assert_eq!(q["login_hint"], "user@example.com");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        "http://127.0.0.1:3004/api/google/callback"
    );

    // The attempt waits in Redis under its state, with the TTL, holding what the callback needs.
    let redis = ctx.redis_client();
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis conn");
    let key = format!("{}:oauth:state:{}", ctx.id, q["state"]);
    let stored: String = conn.get(&key).await.expect("state stored");
    let attempt: serde_json::Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(attempt["subaccountId"], SUBACCOUNT);
    assert_eq!(attempt["userEmail"], "user@example.com");
    assert_eq!(attempt["correlationId"], request.correlation_id.to_string());
    assert!(
        attempt["pkceVerifier"]
            .as_str()
            .is_some_and(|v| v.len() >= 43)
    );
    let ttl_ms: i64 = conn.pttl(&key).await.expect("pttl");
    assert!(ttl_ms > 590_000 && ttl_ms <= 600_000, "{ttl_ms}");

    // The email job was stored in JetStream before the reply.
    let js = jetstream::new(nats.clone());
    let issued = e2e::stream::messages(
        &js,
        &ns.events_stream(),
        Some(ns.event_filter::<AuthLinkIssued>()),
    )
    .await
    .expect("stream");
    assert_eq!(issued.len(), 1, "exactly one email job");
    let event: Envelope<AuthLinkIssued> = Envelope::decode(&issued[0].payload).expect("decodes");
    // The email links to the consent page for the same state, which leads on to auth_url;
    // it carries what the email says about who asks, what for and until when.
    assert_eq!(
        event.payload.auth_url,
        format!(
            "http://127.0.0.1:3004/api/google/consent?state={}",
            q["state"]
        )
    );
    assert_eq!(attempt["authUrl"], auth_url.as_str());
    assert_eq!(event.payload.expires_at, expires_at);
    assert_eq!(
        event.payload.expires_at - event.payload.issued_at.expect("issuedAt"),
        chrono::Duration::minutes(10)
    );
    assert_eq!(
        event.payload.product_name.as_ref().map(|n| n.as_str()),
        Some("Calendar connector")
    );
    assert!(!event.payload.scopes.is_empty());
    assert_eq!(event.correlation_id, request.correlation_id);
    assert_eq!(event.subaccount_id.as_str(), SUBACCOUNT);

    worker.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_email_job_jetstream_cannot_take_is_kept_and_published_once_it_can() {
    use futures::TryStreamExt;
    let ctx = TestContext::new();
    let worker = start_worker(&ctx).await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");
    let js = jetstream::new(nats.clone());
    // No stream takes the event subjects: JetStream answers "no responders", as it does for the
    // seconds a stream elects a new leader after the node that led it died.
    js.delete_stream(ns.events_stream()).await.expect("delete");

    let (request, reply) = connect(&nats, &ns, "user@example.com", true).await;
    let ConnectRequestedReply::Issued { email_sent, .. } = reply else {
        panic!("rejected: {reply:?}");
    };
    assert!(email_sent, "the outbox holds the job, so the promise holds");
    let outbox = mongodb::Client::with_uri_str(&ctx.mongodb_uri)
        .await
        .expect("mongo")
        .database(&format!("{}_{SUBACCOUNT}", ctx.id))
        .collection::<bson::Document>("outbox");
    let kept: Vec<bson::Document> = outbox
        .find(bson::doc! {})
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("read");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].get_str("eventType"), Ok("auth-link-issued"));

    // The stream is back: the relay publishes the job (once) and clears the outbox.
    let settings = ctx.common(&[]).streams;
    service_kit::nats::ensure_streams(&js, &ns, &settings)
        .await
        .expect("streams");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let issued = loop {
        let issued = e2e::stream::messages(
            &js,
            &ns.events_stream(),
            Some(ns.event_filter::<AuthLinkIssued>()),
        )
        .await
        .unwrap_or_default();
        let left = outbox.count_documents(bson::doc! {}).await.expect("count");
        if (!issued.is_empty() && left == 0) || std::time::Instant::now() > deadline {
            assert_eq!(left, 0, "the outbox is cleared once JetStream has the job");
            break issued;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(issued.len(), 1, "exactly one email job");
    let event: Envelope<AuthLinkIssued> = Envelope::decode(&issued[0].payload).expect("decodes");
    assert_eq!(event.correlation_id, request.correlation_id);
    assert_eq!(kept[0].get_str("_id"), Ok(event.id.to_string().as_str()));
    worker.stop().await.expect("clean stop");
}

#[tokio::test]
async fn no_email_requested_means_no_email_job_and_each_link_is_unique() {
    let ctx = TestContext::new();
    let worker = start_worker(&ctx).await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");

    let mut states = std::collections::HashSet::new();
    for _ in 0..5 {
        let (_, reply) = connect(&nats, &ns, "user@example.com", false).await;
        let ConnectRequestedReply::Issued {
            auth_url,
            email_sent,
            ..
        } = reply
        else {
            panic!("rejected: {reply:?}");
        };
        assert!(!email_sent);
        let url = url::Url::parse(&auth_url).expect("url");
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state");
        assert!(states.insert(state), "state reused");
    }
    let js = jetstream::new(nats.clone());
    let mut stream = js.get_stream(ns.events_stream()).await.expect("stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        0,
        "nothing published"
    );
    worker.stop().await.expect("clean stop");
}

#[tokio::test]
async fn redis_down_means_a_clear_refusal_and_no_email_job() {
    let ctx = TestContext::new();
    let mut redis = e2e::servers::RedisServer::start();
    let url = redis.url();
    let config: OAuthWorkerConfig = ctx.config(&[("REDIS_URL", url.as_str())]);
    let mut worker = RunningService::start(oauth_worker::SERVICE, |l, s| {
        oauth_worker::run(config, l, s)
    })
    .await;
    worker.wait_ready(Duration::from_secs(30)).await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");

    redis.stop();
    let (_, reply) = connect(&nats, &ns, "user@example.com", true).await;
    assert!(
        matches!(
            reply,
            ConnectRequestedReply::Rejected {
                code: schemas::events::ConnectRejectionCode::StateStoreUnavailable,
                ..
            }
        ),
        "{reply:?}"
    );
    let js = jetstream::new(nats.clone());
    let mut stream = js.get_stream(ns.events_stream()).await.expect("stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        0,
        "no link, so no email job"
    );
    worker.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_undecodable_request_is_refused_not_ignored() {
    let ctx = TestContext::new();
    let worker = start_worker(&ctx).await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");
    let reply = nats
        .request(
            ns.connect_requested(),
            r#"{"type":"connect-requested","extra":1}"#.into(),
        )
        .await
        .expect("answered");
    let reply: ConnectRequestedReply = serde_json::from_slice(&reply.payload).expect("decodes");
    assert!(
        matches!(
            reply,
            ConnectRequestedReply::Rejected {
                code: schemas::events::ConnectRejectionCode::InvalidRequest,
                ..
            }
        ),
        "{reply:?}"
    );
    worker.stop().await.expect("clean stop");
}

/// With `Gcal-Link-Settings-Wanted` the reply carries what the api needs to issue links the
/// worker's way: the worker's own settings and limits, and nothing secret.
#[tokio::test]
async fn asked_for_them_the_worker_hands_over_its_link_settings_without_the_secret() {
    const SECRET: &str = "a-client-secret-that-must-stay-in-the-worker";
    let ctx = TestContext::new();
    let worker = start_worker_with(
        &ctx,
        &[
            ("GOOGLE_CLIENT_SECRET", SECRET),
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "7/10s"),
            ("STATE_STORE_TIMEOUT", "800ms"),
        ],
    )
    .await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");
    let request = Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectRequested {
            user_email: UserEmail::parse("user@example.com").expect("email"),
            send_email: false,
            tenant_name: None,
        },
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(schemas::subjects::headers::LINK_SETTINGS_WANTED, "1");
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        nats.request_with_headers(ns.connect_requested(), headers, request.to_bytes().into()),
    )
    .await
    .expect("answered in time")
    .expect("a responder answered");
    let raw = String::from_utf8(reply.payload.to_vec()).expect("utf-8");
    let reply: ConnectRequestedReply = serde_json::from_str(&raw).expect("reply decodes");
    let ConnectRequestedReply::Issued {
        link_settings: Some(settings),
        ..
    } = reply
    else {
        panic!("no settings: {reply:?}");
    };
    assert_eq!(settings.client_id, "client-e2e");
    assert_eq!(
        settings.auth_url,
        "https://accounts.example/o/oauth2/v2/auth"
    );
    assert_eq!(settings.state_ttl_ms, 600_000);
    assert_eq!(settings.state_store_timeout_ms, 800);
    assert_eq!(settings.wait_replicas, 0);
    assert_eq!(settings.limits.connect_per_subaccount.count, 7);
    assert_eq!(settings.limits.connect_per_subaccount.period_ms, 10_000);
    assert_eq!(settings.limits.live_states_per_subaccount, 200);
    assert!(!raw.contains(SECRET), "the client secret was sent: {raw}");
    worker.stop().await.expect("clean stop");
}
