//! service-kit's durable consumer runner against a real JetStream: acks after success, NAKs
//! with delay and retries, dead-letters with the reason, never loses a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use e2e::TestContext;
use e2e::stream::header;
use futures::StreamExt;
use schemas::events::AuthLinkIssued;
use schemas::subjects::headers;
use schemas::{Envelope, SubaccountId, UserEmail};
use service_kit::consumer::{
    ConsumerSpec, Delivery, EventHandler, HandlerError, ensure_consumer, run,
};
use service_kit::{CancellationToken, Infrastructure};

const DURABLE: &str = "consumer-test";

/// Fails the first `failures[recipient]` deliveries of an event with the given error kind.
#[derive(Default)]
struct ScriptedHandler {
    failures: HashMap<String, (u32, HandlerError)>,
    seen: Mutex<Vec<(String, i64)>>,
}

impl EventHandler<AuthLinkIssued> for ScriptedHandler {
    async fn handle(
        &self,
        event: Envelope<AuthLinkIssued>,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let who = event.payload.user_email.to_string();
        self.seen
            .lock()
            .expect("lock")
            .push((who.clone(), delivery.delivered));
        match self.failures.get(&who) {
            Some((times, error)) if delivery.delivered <= i64::from(*times) => Err(error.clone()),
            _ => Ok(()),
        }
    }
}

fn spec(ns: &schemas::subjects::Namespace) -> ConsumerSpec {
    ConsumerSpec {
        durable: DURABLE,
        filter_subject: ns.event_filter::<AuthLinkIssued>(),
        ack_wait: Duration::from_secs(5),
        max_deliver: 3,
        max_ack_pending: 100,
        concurrency: 4,
        retry_delays: vec![Duration::from_millis(100)],
    }
}

fn event(who: &str) -> Envelope<AuthLinkIssued> {
    Envelope::new(
        SubaccountId::parse("68cf05f060d294db17c0685e").expect("id"),
        uuid::Uuid::now_v7(),
        AuthLinkIssued {
            user_email: UserEmail::parse(who).expect("email"),
            auth_url: "https://accounts.example/auth?state=x".into(),
            expires_at: Utc::now(),
        },
    )
}

async fn dead_letters(
    js: &jetstream::Context,
    ns: &schemas::subjects::Namespace,
    expected: usize,
) -> Vec<jetstream::Message> {
    let stream = js
        .get_stream(ns.dead_letter_stream())
        .await
        .expect("dead-letter stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .expect("ephemeral reader");
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.expect("messages");
    while out.len() < expected {
        match tokio::time::timeout(Duration::from_secs(15), messages.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            other => panic!(
                "expected {expected} dead letters, got {} then {other:?}",
                out.len()
            ),
        }
    }
    out
}

/// Infrastructure on a fresh test context, with the streams provisioned.
async fn connected() -> Infrastructure {
    let ctx = TestContext::new();
    let config = ctx.common(&[]);
    let infra = Infrastructure::connect(&config, "consumer-test", &CancellationToken::new())
        .await
        .expect("connect");
    infra.ensure_streams(&config).await.expect("streams");
    infra
}

#[tokio::test]
async fn acks_retries_and_dead_letters_each_as_its_outcome_says() {
    let infra = connected().await;
    let ns = infra.namespace.clone();
    let spec = spec(&ns);
    let consumer = ensure_consumer(&infra.jetstream, &ns, &spec)
        .await
        .expect("consumer");

    let handler = Arc::new(ScriptedHandler {
        failures: HashMap::from([
            (
                "flaky@example.com".to_owned(),
                (2, HandlerError::Retryable("smtp busy".into())),
            ),
            (
                "down@example.com".to_owned(),
                (99, HandlerError::Retryable("smtp down".into())),
            ),
            (
                "refused@example.com".to_owned(),
                (99, HandlerError::Permanent("550 no such user".into())),
            ),
        ]),
        ..Default::default()
    });
    for who in [
        "ok@example.com",
        "flaky@example.com",
        "down@example.com",
        "refused@example.com",
    ] {
        service_kit::nats::publish_event(&infra.jetstream, &ns, &event(who))
            .await
            .expect("publish");
    }
    // An event that cannot be decoded: same subject family, garbage body.
    let garbage_subject =
        ns.event::<AuthLinkIssued>(&SubaccountId::parse("68cf05f060d294db17c0685e").expect("id"));
    infra
        .jetstream
        .publish(garbage_subject, "{not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(
        infra.jetstream.clone(),
        ns.clone(),
        consumer,
        spec,
        handler.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    let mut letters = dead_letters(&infra.jetstream, &ns, 3).await;
    letters.sort_by_key(|m| {
        header(m, headers::DEAD_LETTER_STREAM_SEQUENCE)
            .parse::<u64>()
            .unwrap_or(0)
    });
    // Published order: down (seq 3), refused (seq 4), garbage (seq 5).
    let down = &letters[0];
    assert_eq!(header(down, headers::DEAD_LETTER_CONSUMER), DURABLE);
    assert_eq!(header(down, headers::DEAD_LETTER_DELIVERIES), "3");
    assert_eq!(header(down, headers::DEAD_LETTER_FIRST_ERROR), "smtp down");
    assert!(
        header(down, headers::DEAD_LETTER_LAST_ERROR)
            .contains("gave up after 3 deliveries: smtp down")
    );
    assert_eq!(
        header(down, headers::EVENT_TYPE),
        "auth-link-issued",
        "original headers kept"
    );
    assert!(header(down, headers::DEAD_LETTER_SUBJECT).ends_with(".68cf05f060d294db17c0685e"));
    let original: Envelope<AuthLinkIssued> =
        Envelope::decode(&down.payload).expect("original payload kept");
    assert_eq!(original.payload.user_email.as_str(), "down@example.com");

    let refused = &letters[1];
    assert_eq!(
        header(refused, headers::DEAD_LETTER_DELIVERIES),
        "1",
        "permanent: no retry"
    );
    assert_eq!(
        header(refused, headers::DEAD_LETTER_LAST_ERROR),
        "550 no such user"
    );

    let garbage = &letters[2];
    assert!(
        header(garbage, headers::DEAD_LETTER_LAST_ERROR)
            .contains("undecodable auth-link-issued event")
    );
    assert_eq!(&garbage.payload[..], b"{not json");

    // Everything settled: nothing pending, nothing unacknowledged, originals still stored.
    let mut settled = false;
    for _ in 0..100 {
        let mut c = infra
            .jetstream
            .get_stream(ns.events_stream())
            .await
            .expect("stream")
            .get_consumer::<jetstream::consumer::pull::Config>(DURABLE)
            .await
            .expect("consumer");
        let info = c.info().await.expect("info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "consumer still has pending or unacknowledged messages"
    );
    let mut events = infra
        .jetstream
        .get_stream(ns.events_stream())
        .await
        .expect("stream");
    assert_eq!(
        events.info().await.expect("info").state.messages,
        5,
        "originals stay in the domain stream"
    );

    let seen = handler.seen.lock().expect("lock").clone();
    let deliveries = |who: &str| {
        seen.iter()
            .filter(|(w, _)| w == who)
            .map(|(_, d)| *d)
            .collect::<Vec<_>>()
    };
    assert_eq!(deliveries("ok@example.com"), [1]);
    assert_eq!(
        deliveries("flaky@example.com"),
        [1, 2, 3],
        "retried until it worked"
    );
    assert_eq!(
        deliveries("down@example.com"),
        [1, 2, 3],
        "max_deliver respected"
    );
    assert_eq!(deliveries("refused@example.com"), [1]);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .expect("no panic");
    infra.close().await;
}

/// Never answers: the task handling the message dies, so JetStream only sees ack timeouts.
struct CrashingHandler;

impl EventHandler<AuthLinkIssued> for CrashingHandler {
    async fn handle(&self, _: Envelope<AuthLinkIssued>, _: Delivery) -> Result<(), HandlerError> {
        panic!("simulated handler crash (expected by the test)");
    }
}

#[tokio::test]
async fn messages_nobody_answers_are_parked_when_jetstream_gives_up() {
    let infra = connected().await;
    let ns = infra.namespace.clone();
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(1),
        max_deliver: 2,
        ..spec(&ns)
    };
    let consumer = ensure_consumer(&infra.jetstream, &ns, &spec)
        .await
        .expect("consumer");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(
        infra.jetstream.clone(),
        ns.clone(),
        consumer,
        spec,
        Arc::new(CrashingHandler),
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    // Let the runner subscribe to the advisories before the event exists.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crashing = event("crash@example.com");
    service_kit::nats::publish_event(&infra.jetstream, &ns, &crashing)
        .await
        .expect("publish");

    let letters = dead_letters(&infra.jetstream, &ns, 1).await;
    let parked = &letters[0];
    assert_eq!(header(parked, headers::DEAD_LETTER_CONSUMER), DURABLE);
    assert_eq!(header(parked, headers::DEAD_LETTER_DELIVERIES), "2");
    assert!(
        header(parked, headers::DEAD_LETTER_LAST_ERROR).contains("no answer after 2 deliveries"),
        "{}",
        header(parked, headers::DEAD_LETTER_LAST_ERROR)
    );
    assert_eq!(header(parked, headers::EVENT_TYPE), "auth-link-issued");
    let original: Envelope<AuthLinkIssued> =
        Envelope::decode(&parked.payload).expect("original payload kept");
    assert_eq!(original.id, crashing.id);
    shutdown.cancel();
    running.await.expect("runner stops");
}
