//! The mailer-worker on real NATS, MongoDB-wire and Redis servers, sending over real SMTP to
//! the test sink: the link arrives, once, whatever JetStream redelivers; SMTP outages are
//! waited out; what can never be sent is parked in the dead-letter stream with its reason.
//!
//! Events are published here with `service_kit::nats::publish_event`, as the oauth-worker does.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use chrono::Utc;
use e2e::process::free_port;
use e2e::smtp::{ReceivedMessage, SmtpSink};
use e2e::{RunningService, TestContext};
use futures::StreamExt;
use mailer_worker::MailerWorkerConfig;
use mongodb::bson::{Document, doc};
use schemas::events::AuthLinkIssued;
use schemas::subjects::{MAILER_CONSUMER, Namespace, headers};
use schemas::{Envelope, SubaccountId, UserEmail};

const WAIT: Duration = Duration::from_secs(30);
const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";

/// One test's mailer, its JetStream view and namespace.
struct Mailer {
    service: RunningService,
    js: jetstream::Context,
    ns: Namespace,
}

impl Mailer {
    /// Starts the mailer-worker sending to `smtp_url`, with quick redeliveries, and waits
    /// until it is ready (its streams and consumer exist by then).
    async fn start(ctx: &TestContext, smtp_url: &str, overrides: &[(&str, &str)]) -> Self {
        let mut settings = vec![
            ("SMTP_URL", smtp_url),
            ("SMTP_TIMEOUT", "2s"),
            ("MAILER_RETRY_DELAYS", "200ms"),
            ("SHUTDOWN_GRACE", "5s"),
        ];
        settings.extend_from_slice(overrides);
        let config: MailerWorkerConfig = ctx.config(&settings);
        let mut service = RunningService::start(mailer_worker::SERVICE, |l, s| {
            mailer_worker::run(config, l, s)
        })
        .await;
        service.wait_ready(WAIT).await;
        let nats = ctx.nats().await;
        Self {
            service,
            js: jetstream::new(nats),
            ns: Namespace::new(&ctx.id).expect("namespace"),
        }
    }

    /// Publishes `event` as the oauth-worker does; returns its stream sequence.
    async fn publish(&self, event: &Envelope<AuthLinkIssued>) -> u64 {
        let ack = service_kit::nats::publish_event(&self.js, &self.ns, event)
            .await
            .expect("published");
        assert!(!ack.duplicate, "a fresh event is not a duplicate");
        ack.sequence
    }

    /// Publishes raw bytes on the auth-link subject under a new message id.
    async fn publish_raw(&self, payload: Vec<u8>, message_id: &str) -> u64 {
        let subject = self.ns.event::<AuthLinkIssued>(&subaccount());
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(message_id);
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .expect("publish")
            .await
            .expect("stored");
        assert!(!ack.duplicate, "stored as a new message");
        ack.sequence
    }

    async fn consumer_info(&self) -> jetstream::consumer::Info {
        self.js
            .get_stream(self.ns.events_stream())
            .await
            .expect("events stream")
            .consumer_info(MAILER_CONSUMER)
            .await
            .expect("mailer consumer")
    }

    /// Waits until the mailer has settled (acked, or parked and acked) every message up to
    /// stream sequence `seq`: the way to know it is done with an event that sends nothing.
    async fn wait_settled(&self, seq: u64) -> jetstream::consumer::Info {
        let deadline = Instant::now() + WAIT;
        loop {
            let info = self.consumer_info().await;
            if info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0 {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "mailer did not settle sequence {seq} within {WAIT:?}: ack floor {}, {} pending",
                info.ack_floor.stream_sequence,
                info.num_ack_pending
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the consumer has redelivered at least one message (a delivery failed).
    async fn wait_redelivered(&self) {
        let deadline = Instant::now() + WAIT;
        while self.consumer_info().await.num_redelivered == 0 {
            assert!(Instant::now() < deadline, "no redelivery within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads `n` dead letters of the mailer's consumer.
    async fn dead_letters(&self, n: usize) -> Vec<jetstream::Message> {
        let stream = self
            .js
            .get_stream(self.ns.dead_letter_stream())
            .await
            .expect("dead-letter stream");
        let reader = stream
            .create_consumer(pull::Config {
                filter_subject: self.ns.dead_letter(MAILER_CONSUMER),
                ..Default::default()
            })
            .await
            .expect("ephemeral reader");
        let mut messages = reader.messages().await.expect("messages");
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(WAIT, messages.next()).await {
                Ok(Some(Ok(m))) => out.push(m),
                other => panic!(
                    "expected {n} dead letters, got {} then {other:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// How many dead letters the dead-letter stream holds right now (no waiting).
    async fn dead_letter_count(&self) -> u64 {
        let mut stream = self
            .js
            .get_stream(self.ns.dead_letter_stream())
            .await
            .expect("dead-letter stream");
        stream.info().await.expect("info").state.messages
    }

    async fn stop(self) {
        self.service
            .stop()
            .await
            .expect("the mailer shuts down cleanly");
    }
}

fn subaccount() -> SubaccountId {
    SubaccountId::parse(SUBACCOUNT).expect("id")
}

/// An event like the oauth-worker's: a consent URL with `&` separators and a single-use state.
fn link_event(to: &str) -> Envelope<AuthLinkIssued> {
    link_event_of(subaccount(), to)
}

/// [`link_event`] of another subaccount (tenant).
fn link_event_of(subaccount: SubaccountId, to: &str) -> Envelope<AuthLinkIssued> {
    let state = uuid::Uuid::new_v4().simple().to_string();
    Envelope::new(
        subaccount,
        uuid::Uuid::now_v7(),
        AuthLinkIssued {
            user_email: UserEmail::parse(to).expect("email"),
            auth_url: format!(
                "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&client_id=test-client&redirect_uri=http%3A%2F%2F127.0.0.1%3A3004%2Fapi%2Fgoogle%2Fcallback&scope=openid%20email&state={state}&login_hint={to}"
            ),
            expires_at: Utc::now() + chrono::Duration::minutes(10),
            issued_at: None,
            product_name: None,
            tenant_name: None,
            scopes: Vec::new(),
        },
    )
}

fn header(message: &jetstream::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| panic!("dead letter lacks header {name}"))
}

fn escaped(url: &str) -> String {
    mailer_worker::email::escape_html(url)
}

fn assert_is_the_link_email(message: &ReceivedMessage, event: &Envelope<AuthLinkIssued>) {
    let to = event.payload.user_email.as_str();
    assert_eq!(message.to, [to], "envelope recipient");
    assert_eq!(message.from, "no-reply@localhost", "envelope sender");
    assert_eq!(message.header("To").as_deref(), Some(to));
    assert_eq!(
        message.subject().as_deref(),
        Some(mailer_worker::email::SUBJECT)
    );
    let url = &event.payload.auth_url;
    let text = message.text().expect("a text/plain part");
    assert!(
        text.contains(url.as_str()),
        "text part lacks the link: {text}"
    );
    let html = message.html().expect("a text/html part");
    assert!(
        html.contains(&format!("href=\"{}\"", escaped(url))),
        "HTML part lacks the escaped link: {html}"
    );
    let expiry = event
        .payload
        .expires_at
        .format("%Y-%m-%d %H:%M UTC")
        .to_string();
    assert!(text.contains(&expiry), "text part lacks the expiry: {text}");
    assert!(html.contains(&expiry), "HTML part lacks the expiry: {html}");
}

#[tokio::test]
async fn emails_the_link_in_text_and_html_to_the_recipient_and_records_the_send() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let event = link_event("user@example.com");
    let seq = mailer.publish(&event).await;

    let received = sink.wait_for_messages(1, WAIT).await;
    assert_eq!(received.len(), 1);
    assert_is_the_link_email(&received[0], &event);
    assert_eq!(
        received[0].header("Message-ID"),
        Some(format!("<auth-link.{}@localhost>", event.id))
    );

    mailer.wait_settled(seq).await;
    let mongo = mongodb::Client::with_uri_str(&ctx.mongodb_uri)
        .await
        .expect("mongo");
    let record = mongo
        .database(&format!("{}_{SUBACCOUNT}", ctx.id))
        .collection::<Document>(mailer_worker::sent::COLLECTION)
        .find_one(doc! { "_id": event.id.to_string() })
        .await
        .expect("query")
        .expect("the send is recorded by event id");
    assert_eq!(record.get_str("status"), Ok("sent"));
    assert_eq!(record.get_str("userEmail"), Ok("user@example.com"));
    assert_eq!(
        record.get_str("correlationId"),
        Ok(event.correlation_id.to_string().as_str())
    );
    assert!(record.get_datetime("sentAt").is_ok(), "{record}");
    mailer.stop().await;
}

#[tokio::test]
async fn a_replayed_event_is_not_emailed_again() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let event = link_event("once@example.com");
    let seq = mailer.publish(&event).await;
    sink.wait_for_messages(1, WAIT).await;
    mailer.wait_settled(seq).await;

    // Past JetStream's duplicate detection: the same envelope under a new message id, as a
    // replay or a producer retry after the duplicate window stores it.
    let again = mailer
        .publish_raw(event.to_bytes(), &format!("{}-replayed", event.id))
        .await;
    let info = mailer.wait_settled(again).await;
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "the replay was delivered once and acked at once"
    );
    assert_eq!(sink.messages().len(), 1, "one email for one event");
    assert_eq!(
        mailer.dead_letter_count().await,
        0,
        "and nothing was parked"
    );
    mailer.stop().await;
}

#[tokio::test]
async fn a_duplicate_arriving_mid_send_waits_and_is_not_emailed_twice() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    // The server holds its 250 for a second: the first delivery is mid-send meanwhile.
    sink.delay_acceptance(Duration::from_secs(1));
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let event = link_event("twice@example.com");
    mailer.publish(&event).await;
    sink.wait_for_messages(1, WAIT).await;

    let again = mailer
        .publish_raw(event.to_bytes(), &format!("{}-again", event.id))
        .await;
    let info = mailer.wait_settled(again).await;
    assert!(
        info.delivered.consumer_sequence >= 3,
        "the duplicate found the send in progress and was retried ({} deliveries)",
        info.delivered.consumer_sequence
    );
    assert_eq!(sink.messages().len(), 1, "one email for one event");
    assert_eq!(mailer.dead_letter_count().await, 0, "nothing was parked");
    mailer.stop().await;
}

#[tokio::test]
async fn mail_waits_for_smtp_to_come_up_and_then_arrives_exactly_once() {
    let ctx = TestContext::new();
    // Nothing listens on this port yet: every attempt is refused.
    let port = free_port();
    let mailer = Mailer::start(&ctx, &format!("smtp://127.0.0.1:{port}"), &[]).await;
    let event = link_event("patient@example.com");
    let seq = mailer.publish(&event).await;
    mailer.wait_redelivered().await;

    let sink = SmtpSink::start_on(port);
    let received = sink.wait_for_messages(1, WAIT).await;
    assert_is_the_link_email(&received[0], &event);
    mailer.wait_settled(seq).await;
    assert_eq!(sink.messages().len(), 1, "exactly once");
    assert_eq!(mailer.dead_letter_count().await, 0, "nothing parked");
    mailer.stop().await;
}

#[tokio::test]
async fn a_transient_refusal_is_retried_in_process_and_sent_once() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    sink.defer_next_recipients(2);
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let event = link_event("greylisted@example.com");
    let seq = mailer.publish(&event).await;

    let received = sink.wait_for_messages(1, WAIT).await;
    assert_is_the_link_email(&received[0], &event);
    let info = mailer.wait_settled(seq).await;
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "two 451s are absorbed inside one delivery, without a JetStream redelivery"
    );
    assert_eq!(sink.messages().len(), 1);
    mailer.stop().await;
}

#[tokio::test]
async fn a_refused_recipient_is_dead_lettered_with_the_reason_and_nothing_is_sent() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let event = link_event("reject-me@example.com");
    let seq = mailer.publish(&event).await;

    let parked = mailer.dead_letters(1).await;
    let letter = &parked[0];
    let reason = header(letter, headers::DEAD_LETTER_LAST_ERROR);
    assert!(
        reason.contains("permanent") && reason.contains("550"),
        "reason names the SMTP refusal: {reason}"
    );
    assert_eq!(
        header(letter, headers::DEAD_LETTER_DELIVERIES),
        "1",
        "a permanent failure is not retried"
    );
    assert_eq!(
        header(letter, headers::DEAD_LETTER_CONSUMER),
        MAILER_CONSUMER
    );
    assert_eq!(
        header(letter, headers::DEAD_LETTER_STREAM_SEQUENCE),
        seq.to_string()
    );
    let published_at = header(letter, headers::DEAD_LETTER_PUBLISHED_AT);
    chrono::DateTime::parse_from_rfc3339(&published_at)
        .unwrap_or_else(|e| panic!("published-at {published_at:?} is not RFC 3339: {e}"));
    let original = Envelope::<AuthLinkIssued>::decode(&letter.payload).expect("original kept");
    assert_eq!(original, event);

    mailer.wait_settled(seq).await;
    assert!(sink.messages().is_empty(), "nothing was sent");
    mailer.stop().await;
}

#[tokio::test]
async fn an_expired_link_is_dead_lettered_instead_of_emailed() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let mut event = link_event("late@example.com");
    event.payload.expires_at = Utc::now() - chrono::Duration::seconds(1);
    let seq = mailer.publish(&event).await;

    let parked = mailer.dead_letters(1).await;
    let reason = header(&parked[0], headers::DEAD_LETTER_LAST_ERROR);
    assert!(reason.contains("expired"), "{reason}");
    mailer.wait_settled(seq).await;
    assert!(sink.messages().is_empty());
    mailer.stop().await;
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_with_the_decode_error() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let mut wrong = serde_json::to_value(link_event("x@example.com")).expect("json");
    wrong["payload"]["authUrl"] = serde_json::json!(42);
    let garbage = serde_json::to_vec(&wrong).expect("json");
    let seq = mailer.publish_raw(garbage.clone(), "not-an-event").await;

    let parked = mailer.dead_letters(1).await;
    let reason = header(&parked[0], headers::DEAD_LETTER_LAST_ERROR);
    assert!(
        reason.contains("undecodable auth-link-issued event") && reason.contains("payload.authUrl"),
        "reason carries the decode error and its path: {reason}"
    );
    assert_eq!(
        parked[0].payload.as_ref(),
        garbage.as_slice(),
        "original bytes kept"
    );
    mailer.wait_settled(seq).await;
    assert!(sink.messages().is_empty());
    mailer.stop().await;
}

#[tokio::test]
async fn shutdown_mid_retry_is_clean_and_the_next_instance_sends_the_mail() {
    let ctx = TestContext::new();
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let mailer = Mailer::start(&ctx, &url, &[]).await;
    let event = link_event("restart@example.com");
    let seq = mailer.publish(&event).await;
    mailer.wait_redelivered().await;

    let started = Instant::now();
    mailer.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped within SHUTDOWN_GRACE (5s) and the NATS drain, took {:?}",
        started.elapsed()
    );

    // Nothing was lost: the event is still pending, and the next instance emails it.
    let sink = SmtpSink::start_on(port);
    let mailer = Mailer::start(&ctx, &url, &[]).await;
    let received = sink.wait_for_messages(1, WAIT).await;
    assert_is_the_link_email(&received[0], &event);
    mailer.wait_settled(seq).await;
    assert_eq!(sink.messages().len(), 1);
    mailer.stop().await;
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_delivery_is_taken_over_and_the_mail_sent() {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let event = link_event("orphan@example.com");
    // What a delivery that died between claiming and sending leaves behind, an hour ago.
    let records = mongodb::Client::with_uri_str(&ctx.mongodb_uri)
        .await
        .expect("mongo")
        .database(&format!("{}_{SUBACCOUNT}", ctx.id))
        .collection::<Document>(mailer_worker::sent::COLLECTION);
    let an_hour_ago = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 3_600_000,
    );
    records
        .insert_one(doc! {
            "_id": event.id.to_string(),
            "status": "sending",
            "userEmail": event.payload.user_email.as_str(),
            "correlationId": event.correlation_id.to_string(),
            "claimedAt": an_hour_ago,
        })
        .await
        .expect("stale claim");

    let mailer = Mailer::start(&ctx, &sink.url(), &[]).await;
    let seq = mailer.publish(&event).await;
    let received = sink.wait_for_messages(1, WAIT).await;
    assert_is_the_link_email(&received[0], &event);
    mailer.wait_settled(seq).await;
    let record = records
        .find_one(doc! { "_id": event.id.to_string() })
        .await
        .expect("query")
        .expect("record");
    assert_eq!(record.get_str("status"), Ok("sent"), "{record}");
    mailer.stop().await;
}

#[tokio::test]
async fn an_smtp_outage_outlasting_every_delivery_parks_the_event_with_the_reason() {
    let ctx = TestContext::new();
    let nothing_listens = format!("smtp://127.0.0.1:{}", free_port());
    let mailer = Mailer::start(&ctx, &nothing_listens, &[("MAILER_MAX_DELIVER", "2")]).await;
    let event = link_event("unlucky@example.com");
    let seq = mailer.publish(&event).await;

    let parked = mailer.dead_letters(1).await;
    let reason = header(&parked[0], headers::DEAD_LETTER_LAST_ERROR);
    assert!(
        reason.contains("gave up after 2 deliveries") && reason.contains("SMTP transient failure"),
        "{reason}"
    );
    assert_eq!(header(&parked[0], headers::DEAD_LETTER_DELIVERIES), "2");
    mailer.wait_settled(seq).await;
    mailer.stop().await;
}

#[tokio::test]
async fn one_tenants_flood_of_links_does_not_hold_back_another_tenants_link() {
    const FLOOD: usize = 100;
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    // Every send takes at least 300 ms: the flood alone keeps the senders busy for seconds.
    sink.delay_acceptance(Duration::from_millis(300));
    let mailer = Mailer::start(
        &ctx,
        &sink.url(),
        &[
            ("MAILER_CONCURRENCY", "4"),
            ("MAILER_PER_TENANT_CONCURRENCY", "2"),
        ],
    )
    .await;
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| link_event(&format!("flood-{i}@example.com")))
        .collect();
    for event in &flood {
        mailer.publish(event).await;
    }
    let other = link_event_of(
        SubaccountId::parse("68cf05f060d294db17c0b000").expect("id"),
        "other-tenant@example.com",
    );
    let last = mailer.publish(&other).await;
    let published = Instant::now();

    // In stream order the link would wait for the flood in front of it: 100 sends, 4 at a
    // time, 300 ms each, at least 7.5 s. Fairly it takes a sender A may not use.
    const BOUND: Duration = Duration::from_secs(3);
    let is_other = |m: &ReceivedMessage| m.to == ["other-tenant@example.com"];
    let received = loop {
        let received = sink.messages();
        if received.iter().any(is_other) {
            break received;
        }
        assert!(
            published.elapsed() < BOUND,
            "the other tenant's link did not arrive within {BOUND:?} ({} of the flood's {FLOOD} did)",
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let flood_before = received.iter().take_while(|m| !is_other(m)).count();
    assert!(
        flood_before < FLOOD / 2,
        "the flood was still being sent when the other link arrived ({flood_before} of {FLOOD} sent)"
    );
    assert_is_the_link_email(
        received.iter().find(|m| is_other(m)).expect("found above"),
        &other,
    );

    // The flood is sent too, each link once.
    let received = sink
        .wait_for_messages(FLOOD + 1, Duration::from_secs(60))
        .await;
    let mut recipients: Vec<String> = received.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    let mut expected: Vec<String> = flood
        .iter()
        .chain([&other])
        .map(|e| e.payload.user_email.to_string())
        .collect();
    expected.sort();
    assert_eq!(recipients, expected, "every link emailed once");
    mailer.wait_settled(last).await;
    assert_eq!(sink.messages().len(), FLOOD + 1, "and no second copy later");
    mailer.stop().await;
}

/// Credentials are rotated while links flow: a second mailer starts with freshly minted
/// credentials, the first stops, its credentials are revoked and the server reloaded. Every
/// link is mailed exactly once, and the old credentials no longer connect.
#[tokio::test]
async fn the_mailers_credentials_rotate_while_links_flow_and_none_is_lost() {
    use schemas::bus_access::{Identity, Options};
    const LINKS: usize = 60;
    let server = e2e::servers::NatsServer::start();
    let mut ctx = TestContext::new();
    ctx.nats_url = server.url();
    let sink = SmtpSink::start();
    let old_creds = ctx.creds(Identity::MailerWorker);
    let old = Mailer::start(&ctx, &sink.url(), &[]).await;
    let publisher = {
        let (js, ns) = (old.js.clone(), old.ns.clone());
        tokio::spawn(async move {
            for i in 0..LINKS {
                let event = link_event(&format!("user{i}@example.com"));
                service_kit::nats::publish_event(&js, &ns, &event)
                    .await
                    .expect("published");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    sink.wait_for_messages(10, WAIT).await;

    // Rotate: new credentials, a mailer on them, the old one gone and revoked.
    let auth = e2e::nats_auth::auth();
    let new_dir = ctx.creds_dir.join("rotated");
    let new_creds = auth.mint(
        Identity::MailerWorker,
        &Namespace::new(&ctx.id).expect("ns"),
        Options::default(),
        &new_dir,
    );
    let new = Mailer::start(
        &ctx,
        &sink.url(),
        &[("NATS_CREDS_FILE", new_creds.as_str())],
    )
    .await;
    old.service
        .stop()
        .await
        .expect("the old mailer stops cleanly");
    auth.revoke(&old_creds);
    server.reload();

    publisher.await.expect("every link published");
    let received = sink.wait_for_messages(LINKS, WAIT).await;
    let mut recipients: Vec<String> = received.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    let before = recipients.len();
    recipients.dedup();
    assert_eq!(before, LINKS, "one email per link, none twice");
    assert_eq!(recipients.len(), LINKS);
    new.wait_settled(LINKS as u64).await;

    // The old credentials are refused from the reload on.
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async_nats::ConnectOptions::with_credentials_file(&old_creds)
            .await
            .expect("creds")
            .add_root_certificates(auth.ca.clone().into())
            .require_tls(true)
            .connect(&ctx.nats_url)
            .await;
        if attempt.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revoked credentials still connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    new.service.stop().await.expect("stops");
}

/// The local run's SMTP sink is not what loses mail: with `--journal`, every message it
/// answered `250` to is still in its mailbox after it is SIGKILLed and started again.
#[tokio::test]
async fn the_dev_smtp_sink_keeps_what_it_accepted_across_a_crash() {
    use std::io::{BufRead, BufReader, Write};
    const MESSAGES: usize = 20;
    let dir = e2e::process::scratch_dir("sink-journal");
    let journal = dir.join("sink.jsonl");
    let (smtp_port, http_port) = (free_port(), free_port());
    // Through the harness's spawner: the sink dies with the test, whatever happens.
    let start = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dev-smtp-sink"));
        command
            .args(["--smtp", &format!("127.0.0.1:{smtp_port}")])
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .arg("--journal")
            .arg(&journal);
        e2e::process::spawn(command, &dir.join("sink.log")).expect("dev-smtp-sink starts")
    };
    let mailbox = || async move {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(reply) = reqwest::get(format!("http://127.0.0.1:{http_port}/messages")).await
                && let Ok(messages) = reply.json::<serde_json::Value>().await
            {
                return messages.as_array().expect("a list").len();
            }
            assert!(Instant::now() < deadline, "the sink did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut sink = start();
    assert_eq!(mailbox().await, 0);
    // Plain SMTP, one session per message; each counts once the sink answered 250 to DATA.
    for i in 0..MESSAGES {
        let stream = std::net::TcpStream::connect(("127.0.0.1", smtp_port)).expect("SMTP");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut expect = |code: &str| {
            let mut line = String::new();
            loop {
                line.clear();
                reader.read_line(&mut line).expect("reply");
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    break;
                }
            }
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
        };
        expect("220");
        for (command, code) in [
            ("HELO test\r\n".to_owned(), "250"),
            ("MAIL FROM:<a@example.com>\r\n".to_owned(), "250"),
            (format!("RCPT TO:<user{i}@example.com>\r\n"), "250"),
            ("DATA\r\n".to_owned(), "354"),
            (format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n"), "250"),
        ] {
            writer.write_all(command.as_bytes()).expect("send");
            expect(code);
        }
        let _ = writer.write_all(b"QUIT\r\n");
    }
    sink.kill().expect("SIGKILL");
    let _ = sink.wait();
    let mut sink = start();
    assert_eq!(mailbox().await, MESSAGES, "accepted mail lost in a crash");
    let _ = sink.kill();
    let _ = sink.wait();
}
