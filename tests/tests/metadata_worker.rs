//! The metadata-worker over real NATS, Redis and the MongoDB-wire server: connection events
//! become `connectorsubaccount.metadata` exactly as the spec shows it, idempotently and in
//! order, through MongoDB outages, with the api's caches invalidated and missing connectors
//! parked in the dead-letter stream.

mod api_support;

use std::time::Duration;

use api_support::{Api, token};
use async_nats::jetstream;
use e2e::servers::MongoServer;
use e2e::{RunningService, TestContext};
use metadata_worker::MetadataWorkerConfig;
use ops::Parser;
use schemas::events::{
    ConnectionDisconnected, ConnectionFailed, ConnectionSucceeded, FailureReason,
};
use schemas::subjects::{METADATA_CONSUMER, Namespace, headers};
use schemas::{Envelope, StreamEvent, SubaccountId};
use serde_json::{Value, json};

const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";
const WAIT: Duration = Duration::from_secs(20);

async fn start_worker(ctx: &TestContext, overrides: &[(&str, &str)]) -> RunningService {
    let config: MetadataWorkerConfig = ctx.config(overrides);
    let mut worker = RunningService::start(metadata_worker::SERVICE, |l, s| {
        metadata_worker::run(config, l, s)
    })
    .await;
    worker.wait_ready(Duration::from_secs(30)).await;
    worker
}

fn succeeded(subaccount: &str, google: &str, connected_at: &str) -> Envelope<ConnectionSucceeded> {
    Envelope::new(
        SubaccountId::parse(subaccount).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectionSucceeded {
            calendar_id: format!("{:0>24}", connected_at.len()),
            user_email: "user@example.com".into(),
            google_email: google.into(),
            connected_at: connected_at.into(),
        },
    )
}

async fn publish<E: StreamEvent>(ctx: &TestContext, event: &Envelope<E>) {
    let nats = ctx.nats().await;
    let js = jetstream::new(nats);
    service_kit::nats::publish_event(&js, &Namespace::new(&ctx.id).expect("ns"), event)
        .await
        .expect("published");
}

async fn metadata(api: &Api, subaccount: &str) -> Value {
    api.stored_connectors(subaccount)
        .await
        .into_iter()
        .find(|d| d.get_str("connectorId") == Ok("google-calendar"))
        .map(|d| serde_json::to_value(d.get_document("metadata").expect("metadata")).expect("json"))
        .unwrap_or(Value::Null)
}

/// Polls until `check` holds for the stored metadata ([`e2e::eventually`]).
async fn eventually(api: &Api, subaccount: &str, check: impl Fn(&Value) -> bool) -> Value {
    e2e::eventually("the metadata", WAIT, || async {
        let current = metadata(api, subaccount).await;
        if check(&current) {
            Ok(current)
        } else {
            Err(current)
        }
    })
    .await
}

async fn dead_letters(ctx: &TestContext) -> Vec<async_nats::jetstream::Message> {
    let nats = ctx.nats().await;
    let js = jetstream::new(nats);
    let ns = Namespace::new(&ctx.id).expect("ns");
    e2e::stream::messages(&js, &ns.dead_letter_stream(), None)
        .await
        .expect("dead-letter stream")
}

#[tokio::test]
async fn an_event_becomes_the_specs_metadata_and_the_api_sees_it_at_once() {
    let ctx = TestContext::new();
    // A long cache TTL: only the worker's invalidation can make the api show new metadata.
    let api = Api::start_in(ctx.clone(), &[("CONNECTOR_CACHE_TTL", "1h")]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let path = format!("/api/connectors/{SUBACCOUNT}/google-calendar");
    let before = api.get(&path, Some(&token(SUBACCOUNT))).await;
    assert_eq!(
        before.body["data"]["metadata"],
        json!({}),
        "{}",
        before.body
    );
    let _worker = start_worker(&ctx, &[]).await;

    let event = succeeded(
        SUBACCOUNT,
        "googleuser@gmail.com",
        "2025-10-05T12:00:00.000Z",
    );
    publish(&ctx, &event).await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == true).await;
    let account = json!({
        "calendarId": event.payload.calendar_id,
        "userEmail": "user@example.com",
        "googleEmail": "googleuser@gmail.com",
        "connectedAt": "2025-10-05T12:00:00.000Z",
        "isConnected": true,
    });
    let mut expected = account.clone();
    expected["connections"] = json!([account]);
    assert_eq!(stored, expected);
    // Exactly the spec's keys, in its order, then the list of accounts.
    let documents = api.stored_connectors(SUBACCOUNT).await;
    let ordered: Vec<String> = documents[0]
        .get_document("metadata")
        .expect("metadata")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        ordered,
        [
            "calendarId",
            "userEmail",
            "googleEmail",
            "connectedAt",
            "isConnected",
            "connections"
        ]
    );
    let after = api.get(&path, Some(&token(SUBACCOUNT))).await;
    assert_eq!(
        after.body["data"]["metadata"]["isConnected"], true,
        "cache not invalidated: {}",
        after.body
    );

    // reauth_required for that account: isConnected false with the reason, the rest kept.
    let failed = Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectionFailed {
            user_email: None,
            google_email: Some("googleuser@gmail.com".into()),
            reason: FailureReason::ReauthRequired,
            message: "refresh token revoked".into(),
            missing_scopes: vec![],
        },
    );
    publish(&ctx, &failed).await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == false).await;
    assert_eq!(stored["reason"], "reauth_required");
    assert_eq!(stored["googleEmail"], "googleuser@gmail.com");
    assert_eq!(stored["calendarId"], event.payload.calendar_id);
    assert_eq!(stored["connections"][0]["reason"], "reauth_required");
    assert_eq!(stored["connections"][0]["isConnected"], false);
    let after = api.get(&path, Some(&token(SUBACCOUNT))).await;
    assert_eq!(after.body["data"]["metadata"]["isConnected"], false);

    // A denied attempt does not touch a connection; a later success replaces the failure.
    let denied = Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectionFailed {
            user_email: Some("user@example.com".into()),
            google_email: None,
            reason: FailureReason::AccessDenied,
            message: "denied".into(),
            missing_scopes: vec![],
        },
    );
    publish(&ctx, &denied).await;
    let later = succeeded(
        SUBACCOUNT,
        "googleuser@gmail.com",
        &chrono::Utc::now()
            .checked_add_signed(chrono::Duration::seconds(1))
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    publish(&ctx, &later).await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == true).await;
    assert!(stored.get("reason").is_none(), "{stored}");
    assert_eq!(stored["connections"].as_array().map(Vec::len), Some(1));
    assert!(dead_letters(&ctx).await.is_empty());
}

#[tokio::test]
async fn duplicates_and_late_events_never_win_over_newer_ones() {
    let ctx = TestContext::new();
    let api = Api::start_in(ctx.clone(), &[]).await;
    let subaccounts: Vec<String> = (0..100).map(|i| format!("{i:024x}")).collect();
    for s in &subaccounts {
        api.seed_google_calendar(s).await;
    }
    // 1,000 events: 10 per connector, published newest-first for half of them and shuffled
    // with duplicates for the others, before the worker starts.
    let nats = ctx.nats().await;
    let js = jetstream::new(nats);
    let ns = Namespace::new(&ctx.id).expect("ns");
    let common = ctx.common(&[]);
    service_kit::nats::ensure_streams(&js, &ns, &common.streams)
        .await
        .expect("streams");
    let mut newest = std::collections::HashMap::new();
    let mut pending = Vec::new();
    for (n, s) in subaccounts.iter().enumerate() {
        let mut events: Vec<_> = (0..10)
            .map(|i| {
                succeeded(
                    s,
                    &format!("g{i}@gmail.example"),
                    &format!("2025-10-05T12:00:{i:02}.000Z"),
                )
            })
            .collect();
        newest.insert(s.clone(), "g9@gmail.example".to_owned());
        if n % 2 == 0 {
            events.reverse();
        } else {
            events.rotate_left(3);
            events.push(events[0].clone()); // a duplicate (same id: JetStream drops it)
        }
        pending.extend(events);
    }
    let acks = futures::future::join_all(
        pending
            .iter()
            .map(|event| service_kit::nats::publish_event(&js, &ns, event)),
    )
    .await;
    assert!(acks.iter().all(Result::is_ok));
    let _worker = start_worker(&ctx, &[]).await;
    for s in &subaccounts {
        let stored = eventually(&api, s, |m| m["connectedAt"] == "2025-10-05T12:00:09.000Z").await;
        assert_eq!(stored["googleEmail"], newest[s].as_str(), "{s}");
    }
    // Replaying an old event (new message id) changes nothing.
    publish(
        &ctx,
        &succeeded(
            &subaccounts[0],
            "old@gmail.example",
            "2025-10-05T12:00:01.000Z",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metadata(&api, &subaccounts[0]).await["googleEmail"],
        "g9@gmail.example"
    );
    assert!(dead_letters(&ctx).await.is_empty());
}

#[tokio::test]
async fn events_wait_out_a_mongodb_outage_and_none_is_parked() {
    let mut mongo = MongoServer::start();
    let mut ctx = TestContext::new();
    ctx.mongodb_uri = mongo.uri();
    let api = Api::start_in(ctx.clone(), &[]).await;
    let subaccounts: Vec<String> = (0..20).map(|i| format!("{:024x}", 1000 + i)).collect();
    for s in &subaccounts {
        api.seed_google_calendar(s).await;
    }
    let _worker = start_worker(
        &ctx,
        &[
            ("METADATA_RETRY_DELAYS", "1s,2s"),
            ("METADATA_WRITE_ATTEMPTS", "2"),
        ],
    )
    .await;
    mongo.stop();
    for s in &subaccounts {
        publish(
            &ctx,
            &succeeded(s, "g@gmail.example", "2025-10-05T12:00:00.000Z"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    mongo.restart();
    for s in &subaccounts {
        eventually(&api, s, |m| m["isConnected"] == true).await;
    }
    assert!(dead_letters(&ctx).await.is_empty(), "nothing parked");
}

#[tokio::test]
async fn a_missing_connector_is_retried_then_parked_with_the_reason() {
    let ctx = TestContext::new();
    let api = Api::start_in(ctx.clone(), &[]).await;
    let _worker = start_worker(
        &ctx,
        &[
            ("METADATA_RETRY_DELAYS", "200ms"),
            ("METADATA_MISSING_CONNECTOR_DELIVERIES", "3"),
        ],
    )
    .await;
    let event = succeeded(SUBACCOUNT, "g@gmail.example", "2025-10-05T12:00:00.000Z");
    publish(&ctx, &event).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let parked = loop {
        let parked = dead_letters(&ctx).await;
        if !parked.is_empty() {
            break parked;
        }
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(parked.len(), 1);
    let h = parked[0].headers.clone().expect("headers");
    assert_eq!(
        h.get(headers::DEAD_LETTER_CONSUMER).map(|v| v.as_str()),
        Some(METADATA_CONSUMER)
    );
    assert_eq!(
        h.get(headers::DEAD_LETTER_DELIVERIES).map(|v| v.as_str()),
        Some("3")
    );
    let reason = h
        .get(headers::DEAD_LETTER_LAST_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("no google-calendar connector"), "{reason}");
    let original: Envelope<ConnectionSucceeded> =
        Envelope::decode(&parked[0].payload).expect("original payload");
    assert_eq!(original.id, event.id);
    assert!(metadata(&api, SUBACCOUNT).await.is_null());

    // The cause is fixed (the connector is added), the operator replays: metadata written.
    api.seed_google_calendar(SUBACCOUNT).await;
    let cli = ops::Cli::try_parse_from([
        "gcal-ops",
        "--nats-url",
        &ctx.nats_url,
        "--namespace",
        &ctx.id,
        "dlq",
        "replay",
        "--all",
    ])
    .expect("command line");
    let mut out = Vec::new();
    ops::run_with_env(
        cli,
        service_kit::Env::from_pairs(ctx.operator_env(schemas::bus_access::Identity::Operator)),
        &mut out,
    )
    .await
    .unwrap_or_else(|e| panic!("replay failed: {e:#}\n{}", String::from_utf8_lossy(&out)));
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == true).await;
    assert_eq!(stored["connectedAt"], "2025-10-05T12:00:00.000Z");
    assert!(
        dead_letters(&ctx).await.is_empty(),
        "replayed letters leave the DLQ"
    );
    // Replaying the same event again (from the domain stream) changes nothing.
    let before = api.stored_connectors(SUBACCOUNT).await[0]
        .get_datetime("updatedAt")
        .copied()
        .expect("updatedAt");
    let mut again = event.clone();
    again.id = uuid::Uuid::now_v7(); // as a replay publishes it: past the duplicate window
    publish(&ctx, &again).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = api.stored_connectors(SUBACCOUNT).await[0]
        .get_datetime("updatedAt")
        .copied()
        .expect("updatedAt");
    assert_eq!(before, after, "a replayed event wrote again");
}

fn disconnected(google: &str, at: &str) -> Envelope<ConnectionDisconnected> {
    Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectionDisconnected {
            google_email: google.into(),
            disconnected_at: at.into(),
            operation_id: None,
            revocation: None,
        },
    )
}

#[tokio::test]
async fn a_disconnect_marks_the_account_and_only_a_newer_connection_undoes_it() {
    let ctx = TestContext::new();
    let api = Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let _worker = start_worker(&ctx, &[]).await;
    let first = succeeded(SUBACCOUNT, "g@gmail.example", "2025-10-05T12:00:00.000Z");
    publish(&ctx, &first).await;
    eventually(&api, SUBACCOUNT, |m| m["isConnected"] == true).await;

    // Another account's disconnect does not touch the one described; it is remembered, so
    // that account's older connection arriving late cannot bring it back.
    publish(
        &ctx,
        &disconnected("other@gmail.example", "2025-10-05T12:10:00.000Z"),
    )
    .await;
    publish(
        &ctx,
        &disconnected("g@gmail.example", "2025-10-05T12:20:00.000Z"),
    )
    .await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == false).await;
    assert_eq!(stored["disconnectedAt"], "2025-10-05T12:20:00.000Z");
    assert_eq!(stored["googleEmail"], "g@gmail.example");
    assert_eq!(stored["calendarId"], first.payload.calendar_id);

    // A connection older than the disconnect arriving late changes nothing ...
    publish(
        &ctx,
        &succeeded(SUBACCOUNT, "g@gmail.example", "2025-10-05T12:15:00.000Z"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metadata(&api, SUBACCOUNT).await["isConnected"], false);
    // ... a newer one (a reconnect) is the spec's five fields again.
    publish(
        &ctx,
        &succeeded(SUBACCOUNT, "g@gmail.example", "2025-10-05T12:30:00.000Z"),
    )
    .await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == true).await;
    assert!(stored.get("disconnectedAt").is_none(), "{stored}");
    assert_eq!(stored.as_object().map(|o| o.len()), Some(6), "{stored}");
    publish(
        &ctx,
        &succeeded(
            SUBACCOUNT,
            "other@gmail.example",
            "2025-10-05T12:05:00.000Z",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = metadata(&api, SUBACCOUNT).await;
    assert_eq!(stored["googleEmail"], "g@gmail.example");
    assert_eq!(
        stored["connections"],
        json!([
            {
                "calendarId": first.payload.calendar_id,
                "userEmail": "user@example.com",
                "googleEmail": "g@gmail.example",
                "connectedAt": "2025-10-05T12:30:00.000Z",
                "isConnected": true,
            },
            {
                "googleEmail": "other@gmail.example",
                "isConnected": false,
                "disconnectedAt": "2025-10-05T12:10:00.000Z",
            },
        ])
    );
    assert!(dead_letters(&ctx).await.is_empty());
}

#[tokio::test]
async fn several_accounts_are_listed_and_the_top_level_describes_the_latest_connected_one() {
    let ctx = TestContext::new();
    let api = Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    // A document written before several accounts were supported: the spec's fields only.
    api.tenant_db(SUBACCOUNT)
        .await
        .collection::<mongodb::bson::Document>("connectorsubaccount")
        .update_one(
            mongodb::bson::doc! { "subaccountId": SUBACCOUNT },
            mongodb::bson::doc! { "$set": { "metadata": {
                "calendarId": "000000000000000000000001",
                "userEmail": "user@example.com",
                "googleEmail": "old@gmail.example",
                "connectedAt": "2025-10-05T11:00:00.000Z",
                "isConnected": true,
            } } },
        )
        .await
        .expect("legacy metadata");
    let _worker = start_worker(&ctx, &[]).await;
    let a = succeeded(SUBACCOUNT, "a@gmail.example", "2025-10-05T12:00:00.000Z");
    let b = succeeded(SUBACCOUNT, "b@gmail.example", "2025-10-05T12:10:00.000Z");
    // Out of order: the newer account first.
    publish(&ctx, &b).await;
    publish(&ctx, &a).await;
    let stored = eventually(&api, SUBACCOUNT, |m| {
        m["connections"].as_array().map(Vec::len) == Some(3)
    })
    .await;
    let emails: Vec<&str> = stored["connections"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["googleEmail"].as_str().expect("email"))
        .collect();
    assert_eq!(
        emails,
        ["old@gmail.example", "b@gmail.example", "a@gmail.example"]
    );
    assert_eq!(stored["googleEmail"], "b@gmail.example", "{stored}");
    assert_eq!(stored["isConnected"], true);

    // The described account goes: the most recent remaining one is described.
    publish(
        &ctx,
        &disconnected("b@gmail.example", "2025-10-05T12:20:00.000Z"),
    )
    .await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["googleEmail"] == "a@gmail.example").await;
    assert_eq!(stored["isConnected"], true);
    assert_eq!(stored["connectedAt"], "2025-10-05T12:00:00.000Z");
    assert!(stored.get("disconnectedAt").is_none(), "{stored}");
    assert_eq!(stored["connections"][1]["isConnected"], false);
    assert_eq!(
        stored["connections"][1]["disconnectedAt"],
        "2025-10-05T12:20:00.000Z"
    );

    // A reauth of the described account: the other connected one is described instead.
    let reauth = Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectionFailed {
            user_email: None,
            google_email: Some("a@gmail.example".into()),
            reason: FailureReason::ReauthRequired,
            message: "refresh token revoked".into(),
            missing_scopes: vec![],
        },
    );
    publish(&ctx, &reauth).await;
    let stored = eventually(&api, SUBACCOUNT, |m| {
        m["googleEmail"] == "old@gmail.example"
    })
    .await;
    assert_eq!(stored["isConnected"], true);
    assert_eq!(stored["connections"][2]["reason"], "reauth_required");

    // None connected any more: the latest connected account, with isConnected false.
    publish(
        &ctx,
        &disconnected("old@gmail.example", "2025-10-05T12:30:00.000Z"),
    )
    .await;
    let stored = eventually(&api, SUBACCOUNT, |m| m["isConnected"] == false).await;
    assert_eq!(stored["googleEmail"], "b@gmail.example", "{stored}");
    assert_eq!(stored["disconnectedAt"], "2025-10-05T12:20:00.000Z");
    let connected = stored["connections"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["isConnected"] == true)
        .count();
    assert_eq!(connected, 0);
    assert!(dead_letters(&ctx).await.is_empty());
}

#[tokio::test]
async fn an_email_that_looks_like_a_field_path_is_kept_as_written() {
    // `$` may start an email's local part; in an update pipeline it would name a field.
    let ctx = TestContext::new();
    let api = Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let _worker = start_worker(&ctx, &[]).await;
    let odd = "$metadata@gmail.example";
    publish(
        &ctx,
        &succeeded(SUBACCOUNT, odd, "2025-10-05T12:00:00.000Z"),
    )
    .await;
    publish(
        &ctx,
        &succeeded(
            SUBACCOUNT,
            "plain@gmail.example",
            "2025-10-05T11:00:00.000Z",
        ),
    )
    .await;
    let stored = eventually(&api, SUBACCOUNT, |m| {
        m["connections"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert_eq!(stored["googleEmail"], odd, "{stored}");
    publish(&ctx, &disconnected(odd, "2025-10-05T12:30:00.000Z")).await;
    let stored = eventually(&api, SUBACCOUNT, |m| {
        m["googleEmail"] == "plain@gmail.example"
    })
    .await;
    let entry = stored["connections"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["googleEmail"] == odd)
        .expect("listed")
        .clone();
    assert_eq!(entry["isConnected"], false, "{entry}");
    assert_eq!(entry["disconnectedAt"], "2025-10-05T12:30:00.000Z");
}
