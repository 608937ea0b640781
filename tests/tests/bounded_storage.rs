//! Nothing a tenant's requests can grow is unbounded: the JetStream streams refuse rather than
//! drop, per subaccount; every Redis key expires; the logs that grow with requests expire.

mod api_support;
mod oauth_support;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use chrono::Utc;
use e2e::TestContext;
use schemas::events::AuthLinkIssued;
use schemas::{Envelope, SubaccountId, UserEmail};
use service_kit::nats::{StreamChange, StreamLimit, ensure_streams, publish_event};
use service_kit::{CancellationToken, Infrastructure};

const TENANT_A: &str = "68cf05f060d294db17c0685a";
const TENANT_B: &str = "68cf05f060d294db17c0685b";

fn link_for(subaccount: &str, auth_url: String) -> Envelope<AuthLinkIssued> {
    Envelope::new(
        SubaccountId::parse(subaccount).expect("id"),
        uuid::Uuid::now_v7(),
        AuthLinkIssued {
            user_email: UserEmail::parse("user@example.com").expect("email"),
            auth_url,
            expires_at: Utc::now(),
            issued_at: None,
            product_name: None,
            tenant_name: None,
            scopes: Vec::new(),
        },
    )
}

fn link(subaccount: &str) -> Envelope<AuthLinkIssued> {
    link_for(subaccount, "https://accounts.example/auth?state=x".into())
}

#[tokio::test]
async fn a_subaccount_at_its_bound_is_refused_while_others_publish_and_nothing_stored_is_lost() {
    let metrics = service_kit::metrics::handle();
    let ctx = TestContext::new();
    let config = ctx.common(&[
        ("EVENTS_MAX_MSGS_PER_SUBJECT", "3"),
        ("EVENTS_MAX_MSG_SIZE", "4KiB"),
    ]);
    let infra = Infrastructure::connect(&config, "bounds-test", &CancellationToken::new())
        .await
        .expect("connect");
    infra.ensure_streams(&config).await.expect("streams");
    let (js, ns) = (&infra.jetstream, &infra.namespace);

    let mut stored = Vec::new();
    for _ in 0..3 {
        let event = link(TENANT_A);
        publish_event(js, ns, &event)
            .await
            .expect("within the bound");
        stored.push(event.id);
    }
    let refused = publish_event(js, ns, &link(TENANT_A))
        .await
        .expect_err("the fourth auth link of A within max_age is refused");
    assert_eq!(refused.refused_by, Some(StreamLimit::Subject), "{refused}");
    assert!(refused.to_string().contains("per subject"), "{refused}");

    // Another subaccount, and another event type of A, are untouched by A's bound.
    publish_event(js, ns, &link(TENANT_B))
        .await
        .expect("B publishes while A is at its bound");

    // A re-publish of an event A already stored is still a harmless duplicate.
    let mut again = link(TENANT_A);
    again.id = stored[0];
    let ack = publish_event(js, ns, &again)
        .await
        .expect("a duplicate is acknowledged");
    assert!(ack.duplicate);

    // An event larger than EVENTS_MAX_MSG_SIZE is refused as such, for anyone.
    let huge = link_for(
        TENANT_B,
        format!("https://accounts.example/{}", "x".repeat(5000)),
    );
    let too_large = publish_event(js, ns, &huge)
        .await
        .expect_err("larger than 4KiB");
    assert_eq!(too_large.refused_by, Some(StreamLimit::MessageSize));

    // A's earlier events are all still there, readable by a consumer.
    let a_subject = ns.event::<AuthLinkIssued>(&SubaccountId::parse(TENANT_A).expect("id"));
    let kept: Vec<uuid::Uuid> = e2e::stream::messages(js, &ns.events_stream(), Some(a_subject))
        .await
        .expect("stream")
        .iter()
        .map(|m| {
            Envelope::<AuthLinkIssued>::decode(&m.payload)
                .expect("decodes")
                .id
        })
        .collect();
    assert_eq!(kept, stored);

    // What an operator sees: the refusals by event type and bound.
    let scraped = metrics.render();
    for series in [
        r#"events_publish_refused_total{event_type="auth-link-issued",limit="subject"}"#,
        r#"events_publish_refused_total{event_type="auth-link-issued",limit="message_size"}"#,
    ] {
        assert!(scraped.contains(series), "{series} missing from\n{scraped}");
    }
    infra.close().await;
}

#[tokio::test]
async fn provisioned_streams_carry_the_bounds_and_old_unbounded_streams_are_updated() {
    let ctx = TestContext::new();
    let config = ctx.common(&[
        ("EVENTS_MAX_BYTES", "6MiB"),
        ("EVENTS_MAX_MSGS_PER_SUBJECT", "500"),
        ("EVENTS_MAX_MSG_SIZE", "16KiB"),
        ("DEAD_LETTER_MAX_BYTES", "2MiB"),
    ]);
    let infra = Infrastructure::connect(&config, "bounds-update", &CancellationToken::new())
        .await
        .expect("connect");
    let (js, ns) = (&infra.jetstream, &infra.namespace);

    // The streams as the previous release created them: max_age only, discard Old.
    for (name, subjects, max_age) in [
        (
            ns.events_stream(),
            ns.events_stream_subjects(),
            config.streams.events_max_age,
        ),
        (
            ns.dead_letter_stream(),
            ns.dead_letter_stream_subjects(),
            config.streams.dead_letter_max_age,
        ),
    ] {
        js.create_stream(stream::Config {
            name,
            subjects,
            max_age,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("old-style stream");
    }
    publish_event(js, ns, &link(TENANT_A))
        .await
        .expect("an event stored before the upgrade");

    let changes = ensure_streams(js, ns, &config.streams)
        .await
        .expect("update");
    assert!(
        changes.iter().all(|(_, c)| *c == StreamChange::Updated),
        "{changes:?}"
    );
    let again = ensure_streams(js, ns, &config.streams)
        .await
        .expect("again");
    assert!(
        again.iter().all(|(_, c)| *c == StreamChange::Unchanged),
        "the server's spelling of the bounds reads as unchanged: {again:?}"
    );

    let events = info(js, &ns.events_stream()).await;
    assert_eq!(events.config.max_bytes, 6 << 20);
    assert_eq!(events.config.max_messages_per_subject, 500);
    assert_eq!(events.config.max_message_size, 16 << 10);
    assert_eq!(events.config.discard, stream::DiscardPolicy::New);
    assert!(events.config.discard_new_per_subject);
    assert_eq!(events.state.messages, 1, "the update kept what was stored");
    let dead = info(js, &ns.dead_letter_stream()).await;
    assert_eq!(dead.config.max_bytes, 2 << 20);
    assert_eq!(dead.config.discard, stream::DiscardPolicy::New);
    assert!(!dead.config.discard_new_per_subject);

    // Raising a bound later is an update too.
    let raised = ctx.common(&[("EVENTS_MAX_MSGS_PER_SUBJECT", "900")]);
    let changes = ensure_streams(js, ns, &raised.streams)
        .await
        .expect("raise");
    assert_eq!(changes[0].1, StreamChange::Updated);
    assert_eq!(
        info(js, &ns.events_stream())
            .await
            .config
            .max_messages_per_subject,
        900
    );
    infra.close().await;
}

async fn info(js: &jetstream::Context, name: &str) -> stream::Info {
    js.get_stream(name)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone()
}

#[tokio::test]
async fn after_a_full_flow_every_redis_key_has_a_ttl() {
    use oauth_support::{OAuthStack, SUBACCOUNT};
    use redis::AsyncCommands;

    let ctx = TestContext::new();
    let stack = OAuthStack::start(ctx.clone(), &[]).await;
    let api = api_support::Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;

    // Connect: link → consent at the fake Google → callback; then a token request.
    let google = "person@gmail.example";
    let (_, page) = stack
        .connect(
            "user@example.com",
            e2e::fake_google::Decision::Allow {
                account: Some(google.into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    match stack.access_token(google).await {
        schemas::events::AccessTokenReply::Issued { .. } => {}
        other => panic!("no token: {other:?}"),
    }
    // A link nobody follows (its state stays), and the api's cached reads.
    stack.issue_link("other@example.com").await;
    let token = api_support::token(SUBACCOUNT);
    for path in [
        format!("/api/connectors/{SUBACCOUNT}"),
        format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
    ] {
        let reply = api.get(&path, Some(&token)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }

    let mut redis = stack.redis().await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", ctx.id))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // The flow wrote each kind of key this test can reach (else it proves nothing).
    for kind in [
        ":oauth:state:",
        ":token:access:",
        ":cache:connectors:",
        ":cache:connector:",
    ] {
        assert!(
            keys.iter().any(|k| k.contains(kind)),
            "no {kind} key among {keys:?}"
        );
    }
    for key in &keys {
        let ttl: i64 = redis.pttl(key).await.expect("pttl");
        assert!(ttl > 0, "{key} has no expiry (PTTL {ttl})");
    }
}

#[tokio::test]
async fn made_up_http_methods_do_not_become_metric_series() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let api = api_support::Api::start(&[]).await;
    let address = api
        .service
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    for method in ["FOO", "BREW", "X-SERIES-12345"] {
        let mut conn = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        conn.write_all(
            format!("{method} /some/made/up/path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    }
    let scraped = api.get("/metrics", None).await;
    assert_eq!(scraped.status, 200);
    let text = scraped.body.as_str().expect("Prometheus text").to_owned();
    for made_up in ["FOO", "BREW", "X-SERIES-12345", "/some/made/up/path"] {
        assert!(
            !text.contains(made_up),
            "{made_up} became a label value:\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains(r#"method="other""#)
            && l.contains(r#"route="unmatched""#)),
        "the requests are counted as method=\"other\", route=\"unmatched\":\n{text}"
    );
}

/// `expireAfterSeconds` of the TTL index on `field` of `collection`, if there is one.
async fn ttl_of(db: &mongodb::Database, collection: &str, field: &str) -> Option<i64> {
    use futures::TryStreamExt;
    let indexes: Vec<mongodb::IndexModel> = db
        .collection::<bson::Document>(collection)
        .list_indexes()
        .await
        .ok()?
        .try_collect()
        .await
        .ok()?;
    indexes
        .iter()
        .find(|i| i.keys == bson::doc! { field: 1 })
        .and_then(|i| i.options.as_ref()?.expire_after)
        .map(|d| i64::try_from(d.as_secs()).expect("seconds"))
}

const DAY: i64 = 86_400;

#[tokio::test]
async fn logs_that_grow_with_requests_get_a_ttl_index_where_they_are_written() {
    use api_support::{Api, SUBACCOUNT, token};
    use e2e::smtp::SmtpSink;
    use mailer_worker::MailerWorkerConfig;

    let ctx = TestContext::new();
    let tenant = SubaccountId::parse(SUBACCOUNT).expect("id");

    // The mailer's sent-links record, through a real send.
    let sink = SmtpSink::start();
    let smtp_url = sink.url();
    let config: MailerWorkerConfig = ctx.config(&[
        ("SMTP_URL", smtp_url.as_str()),
        ("MAILER_SENT_LINKS_TTL", "40d"),
    ]);
    let mut mailer = e2e::RunningService::start(mailer_worker::SERVICE, |l, s| {
        mailer_worker::run(config, l, s)
    })
    .await;
    mailer.wait_ready(Duration::from_secs(30)).await;
    let common = ctx.common(&[]);
    let infra = Infrastructure::connect(&common, "ttl-test", &CancellationToken::new())
        .await
        .expect("connect");
    let mut event = link(SUBACCOUNT);
    event.payload.expires_at = Utc::now() + chrono::Duration::hours(1);
    publish_event(&infra.jetstream, &infra.namespace, &event)
        .await
        .expect("publish");
    sink.wait_for_messages(1, Duration::from_secs(30)).await;
    let db = infra.mongo.existing(&tenant);
    assert_eq!(
        ttl_of(&db, mailer_worker::sent::COLLECTION, "claimedAt").await,
        Some(40 * DAY)
    );

    // The webhook delivery log, by the metadata-worker's store.
    let attempt = schemas::documents::webhook::WebhookDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        endpoint_id: "endpoint".into(),
        subaccount_id: SUBACCOUNT.into(),
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "connection-succeeded".into(),
        attempt: 1,
        attempted_at: bson::DateTime::now(),
        status_code: Some(200),
        error: None,
        duration_ms: 3,
        outcome: schemas::documents::webhook::DeliveryOutcome::Delivered,
    };
    metadata_worker::webhooks::store::record(
        &infra.mongo,
        &tenant,
        &attempt,
        Duration::from_secs(36 * 86_400),
    )
    .await
    .expect("recorded");
    assert_eq!(
        ttl_of(&db, "webhookdeliveries", "attemptedAt").await,
        Some(36 * DAY)
    );

    // The api's disconnect operations, through a DELETE.
    let api = Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let reply = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
            Some(&token(SUBACCOUNT)),
            None,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(ttl_of(&db, "operations", "createdAt").await, Some(30 * DAY));

    // A changed setting retunes the index at the next start (a new process).
    let restarted = Infrastructure::connect(&common, "ttl-test-2", &CancellationToken::new())
        .await
        .expect("connect");
    let next = schemas::documents::webhook::WebhookDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        ..attempt
    };
    metadata_worker::webhooks::store::record(
        &restarted.mongo,
        &tenant,
        &next,
        Duration::from_secs(50 * 86_400),
    )
    .await
    .expect("recorded");
    assert_eq!(
        ttl_of(&db, "webhookdeliveries", "attemptedAt").await,
        Some(50 * DAY)
    );
    mailer.stop().await.expect("mailer stops");
    infra.close().await;
    restarted.close().await;
}

#[tokio::test]
async fn the_server_deletes_documents_past_their_ttl() {
    let ctx = TestContext::new();
    let common = ctx.common(&[]);
    let infra = Infrastructure::connect(&common, "ttl-sweep", &CancellationToken::new())
        .await
        .expect("connect");
    // Sweep every second instead of every minute (server-wide; harmless to other tests).
    infra
        .mongo
        .client()
        .database("admin")
        .run_command(bson::doc! { "setParameter": 1, "ttlMonitorSleepSecs": 1 })
        .await
        .expect("setParameter ttlMonitorSleepSecs");
    let tenant = SubaccountId::parse(TENANT_A).expect("id");
    let db = infra.mongo.connection_for(&tenant).await.expect("db");
    let expiry = metadata_worker::webhooks::store::log_expiry(Duration::from_secs(30 * 86_400));
    infra.mongo.ensure_expiry(&db, expiry).await.expect("index");
    let log = db.collection::<bson::Document>(expiry.collection);
    let old =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 31 * DAY * 1000);
    log.insert_many([
        bson::doc! { "_id": "old", "attemptedAt": old },
        bson::doc! { "_id": "new", "attemptedAt": bson::DateTime::now() },
    ])
    .await
    .expect("insert");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while log
        .count_documents(bson::doc! { "_id": "old" })
        .await
        .expect("count")
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the document past its TTL was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        log.count_documents(bson::doc! { "_id": "new" })
            .await
            .expect("count"),
        1,
        "a document within its TTL stays"
    );
    infra.close().await;
}
