//! service-kit's durable consumer runner against a real JetStream: acks after success, NAKs
//! with delay and retries, dead-letters with the reason, never loses a message; and, run
//! fairly, serves every tenant while one floods, within its per-tenant cap, keeps buffered
//! messages alive and hands them back on shutdown.

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
    ConsumerSpec, Delivery, EventHandler, Fairness, HandlerError, ensure_consumer, run, run_fair,
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
    event_of("68cf05f060d294db17c0685e", who)
}

/// An event of the tenant (subaccount) `subaccount`.
fn event_of(subaccount: &str, who: &str) -> Envelope<AuthLinkIssued> {
    Envelope::new(
        SubaccountId::parse(subaccount).expect("id"),
        uuid::Uuid::now_v7(),
        AuthLinkIssued {
            user_email: UserEmail::parse(who).expect("email"),
            auth_url: "https://accounts.example/auth?state=x".into(),
            expires_at: Utc::now(),
            issued_at: None,
            product_name: None,
            tenant_name: None,
            scopes: Vec::new(),
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

// Fair scheduling between tenants.

const TENANT_A: &str = "68cf05f060d294db17c0a000";
const TENANT_B: &str = "68cf05f060d294db17c0b000";
const TENANT_C: &str = "68cf05f060d294db17c0c000";

/// One handler call, as [`PacedHandler`] saw it start.
#[derive(Debug, Clone)]
struct Started {
    tenant: String,
    /// The recipient: which event of its tenant this is.
    who: String,
    delivered: i64,
    at: tokio::time::Instant,
}

#[derive(Debug, Default)]
struct Pace {
    started: Vec<Started>,
    /// Finished with `Ok`, by recipient.
    succeeded: Vec<String>,
    running: HashMap<String, usize>,
    max_running: HashMap<String, usize>,
    running_total: usize,
    max_running_total: usize,
}

/// Takes `work` per event and records what started when, and how many of one tenant ran at
/// the same time.
#[derive(Debug)]
struct PacedHandler {
    work: Duration,
    pace: Mutex<Pace>,
}

impl PacedHandler {
    fn new(work: Duration) -> Arc<Self> {
        Arc::new(Self {
            work,
            pace: Mutex::default(),
        })
    }

    fn started(&self) -> Vec<Started> {
        self.pace.lock().expect("lock").started.clone()
    }

    fn succeeded(&self) -> Vec<String> {
        self.pace.lock().expect("lock").succeeded.clone()
    }

    fn max_running(&self, tenant: &str) -> usize {
        let pace = self.pace.lock().expect("lock");
        pace.max_running.get(tenant).copied().unwrap_or(0)
    }
}

impl EventHandler<AuthLinkIssued> for PacedHandler {
    async fn handle(
        &self,
        event: Envelope<AuthLinkIssued>,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let tenant = event.subaccount_id.to_string();
        let who = event.payload.user_email.to_string();
        {
            let mut pace = self.pace.lock().expect("lock");
            pace.started.push(Started {
                tenant: tenant.clone(),
                who: who.clone(),
                delivered: delivery.delivered,
                at: tokio::time::Instant::now(),
            });
            let running = pace.running.entry(tenant.clone()).or_default();
            *running += 1;
            let running = *running;
            let max = pace.max_running.entry(tenant.clone()).or_default();
            *max = (*max).max(running);
            pace.running_total += 1;
            pace.max_running_total = pace.max_running_total.max(pace.running_total);
        }
        tokio::time::sleep(self.work).await;
        let mut pace = self.pace.lock().expect("lock");
        if let Some(running) = pace.running.get_mut(&tenant) {
            *running -= 1;
        }
        pace.running_total -= 1;
        pace.succeeded.push(who);
        Ok(())
    }
}

/// Polls `check` until it yields, failing after `limit` ([`e2e::eventually`]).
async fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    e2e::eventually(what, limit, || {
        std::future::ready(check().ok_or("nothing yet"))
    })
    .await
}

/// A consumer spec for fair runs, with its `max_ack_pending` sized for `fairness`.
fn fair_spec(
    ns: &schemas::subjects::Namespace,
    concurrency: usize,
    fairness: Fairness,
) -> ConsumerSpec {
    ConsumerSpec {
        ack_wait: Duration::from_secs(30),
        max_ack_pending: fairness.max_ack_pending(100),
        concurrency,
        ..spec(ns)
    }
}

/// Waits until the test consumer has nothing left to deliver and nothing unacknowledged: from
/// then on, nothing can be redelivered.
async fn settled(infra: &Infrastructure, limit: Duration) -> jetstream::consumer::Info {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let info = infra
            .jetstream
            .get_stream(infra.namespace.events_stream())
            .await
            .expect("stream")
            .consumer_info(DURABLE)
            .await
            .expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer did not settle within {limit:?}: {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `events` in order, without waiting for each one's ack before sending the next:
/// a flood arrives in a few milliseconds, not one round trip per event.
async fn publish_all(infra: &Infrastructure, events: &[Envelope<AuthLinkIssued>]) {
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        let message = jetstream::message::PublishMessage::build()
            .payload(event.to_bytes().into())
            .message_id(event.id.to_string());
        let subject = infra
            .namespace
            .event::<AuthLinkIssued>(&event.subaccount_id);
        acks.push(
            infra
                .jetstream
                .send_publish(subject, message)
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// How many handler starts of `tenant` came after message `who` in start order although they
/// were published before it, for each message: with a cap of `c` in flight per tenant and
/// start order kept, at most `c - 1` (the ones started just before it may enter the handler a
/// moment later).
fn overtaken_by_later_starts(started: &[Started], tenant: &str) -> usize {
    let order: Vec<usize> = started
        .iter()
        .filter(|s| s.tenant == tenant)
        .map(|s| index_of(&s.who))
        .collect();
    (0..order.len())
        .map(|i| {
            order[i + 1..]
                .iter()
                .filter(|later| **later < order[i])
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `a-17@example.com` → 17.
fn index_of(who: &str) -> usize {
    who.split(['-', '@'])
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{who} has no index"))
}

#[tokio::test]
async fn a_flood_from_one_tenant_does_not_delay_another_tenants_event() {
    const FLOOD: usize = 300;
    const CONCURRENCY: usize = 4;
    const PER_TENANT: usize = 2;
    let infra = connected().await;
    let ns = infra.namespace.clone();
    let fairness = Fairness {
        per_tenant_concurrency: PER_TENANT,
        buffer: 500,
    };
    let spec = fair_spec(&ns, CONCURRENCY, fairness);
    let consumer = ensure_consumer(&infra.jetstream, &ns, &spec)
        .await
        .expect("consumer");
    let handler = PacedHandler::new(Duration::from_millis(15));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run_fair(
        infra.jetstream.clone(),
        ns.clone(),
        consumer,
        spec,
        fairness,
        handler.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    let flood: Vec<_> = (0..FLOOD)
        .map(|i| event_of(TENANT_A, &format!("a-{i}@example.com")))
        .collect();
    publish_all(&infra, &flood).await;
    publish_all(&infra, &[event_of(TENANT_B, "b-0@example.com")]).await;
    let b_published = tokio::time::Instant::now();

    let b_started = until("tenant B's event to start", Duration::from_secs(30), || {
        handler.started().into_iter().find(|s| s.tenant == TENANT_B)
    })
    .await;
    let started = handler.started();
    let a_before_b = started
        .iter()
        .filter(|s| s.tenant == TENANT_A && s.at >= b_published && s.at < b_started.at)
        .count();
    let a_started_before_b = started.iter().take_while(|s| s.tenant != TENANT_B).count();
    // In stream order B would wait for the whole flood still queued when it was published
    // (hundreds of A's events); fairly, it starts in a slot A may not use.
    assert!(
        a_before_b <= 2 * CONCURRENCY,
        "{a_before_b} of A's events started after B was published and before B \
         (B waited {:?}; {a_started_before_b} of A's {FLOOD} had started before it)",
        b_started.at - b_published
    );
    assert!(
        a_started_before_b < FLOOD / 2,
        "the flood was still being worked through when B started ({a_started_before_b} of {FLOOD} started)"
    );

    // Every event handled exactly once, each tenant's in the order they were published (up to
    // the ones in flight together), and never more of one tenant at a time than its cap.
    until("the whole flood handled", Duration::from_secs(60), || {
        (handler.succeeded().len() > FLOOD).then_some(())
    })
    .await;
    let info = settled(&infra, Duration::from_secs(30)).await;
    assert_eq!(
        info.delivered.consumer_sequence,
        FLOOD as u64 + 1,
        "the server delivered each message once"
    );
    let started = handler.started();
    let mut a_handled: Vec<usize> = started
        .iter()
        .filter(|s| s.tenant == TENANT_A)
        .map(|s| index_of(&s.who))
        .collect();
    a_handled.sort_unstable();
    assert_eq!(
        a_handled,
        (0..FLOOD).collect::<Vec<_>>(),
        "each of A's events once"
    );
    assert_eq!(started.len(), FLOOD + 1, "nothing handled twice");
    assert!(
        started.iter().all(|s| s.delivered == 1),
        "nothing redelivered"
    );
    assert!(
        overtaken_by_later_starts(&started, TENANT_A) < PER_TENANT,
        "A's events started out of order"
    );
    assert_eq!(
        handler.max_running(TENANT_A),
        PER_TENANT,
        "A ran up to its cap and never past it"
    );
    let max_total = handler.pace.lock().expect("lock").max_running_total;
    assert!(max_total <= CONCURRENCY, "{max_total} in flight at once");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .expect("no panic");
    infra.close().await;
}

#[tokio::test]
async fn shutdown_with_a_full_buffer_hands_every_waiting_message_back_at_once() {
    const PER_TENANT: usize = 10;
    let infra = connected().await;
    let ns = infra.namespace.clone();
    let fairness = Fairness {
        per_tenant_concurrency: 1,
        buffer: 20,
    };
    // ack_wait is far beyond the waits below: a message that was not handed back would only
    // come back after it.
    let spec = fair_spec(&ns, 2, fairness);
    assert_eq!(spec.ack_wait, Duration::from_secs(30));
    let handler = PacedHandler::new(Duration::from_millis(100));
    let mut events = Vec::new();
    for i in 0..PER_TENANT {
        for (tenant, name) in [(TENANT_A, "a"), (TENANT_B, "b"), (TENANT_C, "c")] {
            events.push(event_of(tenant, &format!("{name}-{i}@example.com")));
        }
    }
    publish_all(&infra, &events).await;

    let first = CancellationToken::new();
    let consumer = ensure_consumer(&infra.jetstream, &ns, &spec)
        .await
        .expect("consumer");
    let running = tokio::spawn(run_fair(
        infra.jetstream.clone(),
        ns.clone(),
        consumer,
        spec.clone(),
        fairness,
        handler.clone(),
        first.clone(),
        Duration::from_secs(5),
    ));
    // The buffer is full (20 of 30 pulled) once the first events are under way.
    let pending = || async {
        infra
            .jetstream
            .get_stream(ns.events_stream())
            .await
            .expect("stream")
            .consumer_info(DURABLE)
            .await
            .expect("consumer info")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pending().await.num_ack_pending < 20 || handler.started().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the buffer never filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the first runner stops")
        .expect("no panic");
    let handled_by_first = handler.succeeded().len();
    assert!(
        handled_by_first < 10,
        "the first runner stopped with most of its buffer waiting ({handled_by_first} handled)"
    );
    assert_eq!(
        handler.started().len(),
        handled_by_first,
        "what was in flight finished before the runner returned"
    );

    // The second runner (another replica, or the restarted one) gets them all at once, not
    // after ack_wait.
    let restarted = tokio::time::Instant::now();
    let second = CancellationToken::new();
    let consumer = ensure_consumer(&infra.jetstream, &ns, &spec)
        .await
        .expect("consumer");
    let running = tokio::spawn(run_fair(
        infra.jetstream.clone(),
        ns.clone(),
        consumer,
        spec,
        fairness,
        handler.clone(),
        second.clone(),
        Duration::from_secs(5),
    ));
    until(
        "every event handled after the restart",
        Duration::from_secs(15),
        || (handler.succeeded().len() >= events.len()).then_some(()),
    )
    .await;
    let waited = restarted.elapsed();
    let mut succeeded = handler.succeeded();
    succeeded.sort();
    let mut expected: Vec<String> = events
        .iter()
        .map(|e| e.payload.user_email.to_string())
        .collect();
    expected.sort();
    assert_eq!(succeeded, expected, "every event handled once, none twice");
    assert!(
        waited < Duration::from_secs(15),
        "the handed-back messages came back before ack_wait ({waited:?})"
    );
    second.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the second runner stops")
        .expect("no panic");
    infra.close().await;
}

#[tokio::test]
async fn messages_waiting_in_the_buffer_past_ack_wait_are_not_redelivered() {
    const EVENTS: usize = 12;
    let infra = connected().await;
    let ns = infra.namespace.clone();
    let fairness = Fairness {
        per_tenant_concurrency: 1,
        buffer: 50,
    };
    // One at a time, 200 ms each: the last waits about 2.2 s in the buffer, over twice
    // ack_wait. Only the progress acks keep the server from redelivering it meanwhile.
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(1),
        ..fair_spec(&ns, 1, fairness)
    };
    let consumer = ensure_consumer(&infra.jetstream, &ns, &spec)
        .await
        .expect("consumer");
    let handler = PacedHandler::new(Duration::from_millis(200));
    let events: Vec<_> = (0..EVENTS)
        .map(|i| event_of(TENANT_A, &format!("a-{i}@example.com")))
        .collect();
    publish_all(&infra, &events).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run_fair(
        infra.jetstream.clone(),
        ns.clone(),
        consumer,
        spec,
        fairness,
        handler.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    let info = settled(&infra, Duration::from_secs(20)).await;
    assert_eq!(
        info.delivered.consumer_sequence, EVENTS as u64,
        "the server delivered each message once"
    );
    let started = handler.started();
    let order: Vec<usize> = started.iter().map(|s| index_of(&s.who)).collect();
    assert_eq!(
        order,
        (0..EVENTS).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert!(
        started.iter().all(|s| s.delivered == 1),
        "a waiting message was redelivered: {started:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .expect("no panic");
    infra.close().await;
}

#[tokio::test]
async fn a_full_dead_letter_stream_holds_the_event_until_there_is_room() {
    let metrics = service_kit::metrics::handle();
    let infra = connected().await;
    let ns = infra.namespace.clone();
    let js = infra.jetstream.clone();
    // Fill the dead-letter stream (a test context gives it a few MiB) with other letters.
    let filler = ns.dead_letter("filler");
    for size in [256 << 10, 16 << 10, 1 << 10, 64] {
        loop {
            let sent = js
                .publish(filler.clone(), vec![b'x'; size].into())
                .await
                .expect("send");
            if sent.await.is_err() {
                break;
            }
        }
    }
    let spec = ConsumerSpec {
        max_deliver: 2,
        ..spec(&ns)
    };
    let consumer = ensure_consumer(&js, &ns, &spec).await.expect("consumer");
    let handler = ScriptedHandler {
        failures: HashMap::from([(
            "refused@example.com".to_owned(),
            (99, HandlerError::Permanent("mailbox does not exist".into())),
        )]),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(
        js.clone(),
        ns.clone(),
        consumer.clone(),
        spec,
        Arc::new(handler),
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    let refused = event("refused@example.com");
    service_kit::nats::publish_event(&js, &ns, &refused)
        .await
        .expect("publish");

    // Parking fails; the event is neither acked nor given up on, and is still not parked
    // after more time than all its deliveries take.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut durable = js
        .get_stream(ns.events_stream())
        .await
        .expect("stream")
        .get_consumer::<jetstream::consumer::pull::Config>(DURABLE)
        .await
        .expect("durable");
    let info = durable.info().await.expect("info").clone();
    assert_eq!(
        info.num_ack_pending, 1,
        "the event is held, not acked: {info:?}"
    );
    let ours = Some(ns.dead_letter(DURABLE));
    let parked = e2e::stream::messages(&js, &ns.dead_letter_stream(), ours.clone())
        .await
        .expect("stream");
    assert!(parked.is_empty(), "parked although the stream was full");
    assert!(
        metrics.render().contains(&format!(
            r#"events_processed_total{{consumer="{DURABLE}",outcome="park_failed"}}"#
        )),
        "park failures are counted"
    );

    // Room again: the held event is parked, with its reason, and acked.
    js.get_stream(ns.dead_letter_stream())
        .await
        .expect("dead letters")
        .purge()
        .filter(filler)
        .await
        .expect("purge the filler");
    let letters = dead_letters(&js, &ns, 1).await;
    let original: Envelope<AuthLinkIssued> =
        Envelope::decode(&letters[0].payload).expect("original payload");
    assert_eq!(original.id, refused.id);
    assert_eq!(
        header(&letters[0], headers::DEAD_LETTER_LAST_ERROR),
        "mailbox does not exist"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = durable.info().await.expect("info").clone();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not acked after parking: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.expect("runner stops");
}
