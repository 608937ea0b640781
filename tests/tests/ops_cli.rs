//! The operator CLI (`gcal-ops`, crate `ops`) against a real JetStream, in-process: dead
//! letters made by service-kit's own consumer runner are listed, shown, replayed and purged;
//! domain events are replayed by sequence range and by time. Each test has its own namespace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use chrono::Utc;
use e2e::TestContext;
use ops::Parser as _;
use schemas::events::{AuthLinkIssued, ConnectionFailed, FailureReason};
use schemas::subjects::{Namespace, headers};
use schemas::{Envelope, StreamEvent, SubaccountId, UserEmail};
use serde_json::Value;
use service_kit::consumer::{
    ConsumerSpec, Delivery, EventHandler, HandlerError, ensure_consumer, run,
};
use service_kit::{CancellationToken, Env};

const MAILER: &str = "mailer-test";
const METADATA: &str = "metadata-test";
/// Longer than the list table shows (60 characters).
const LONG_ERROR: &str = "tenant database unavailable: the connection pool was closed while the update was being written";

fn sub_a() -> SubaccountId {
    SubaccountId::parse("68cf05f060d294db17c0685e").expect("id")
}

fn sub_b() -> SubaccountId {
    SubaccountId::parse("68cf05f060d294db17c0685f").expect("id")
}

fn auth_link(who: &str) -> Envelope<AuthLinkIssued> {
    Envelope::new(
        sub_a(),
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

fn connection_failed() -> Envelope<ConnectionFailed> {
    Envelope::new(
        sub_b(),
        uuid::Uuid::now_v7(),
        ConnectionFailed {
            user_email: Some("b@example.com".into()),
            google_email: None,
            reason: FailureReason::AccessDenied,
            message: "The user denied access".into(),
            missing_scopes: Vec::new(),
        },
    )
}

/// Parks `refused@` permanently; everything else succeeds.
struct Mailer;

impl EventHandler<AuthLinkIssued> for Mailer {
    async fn handle(
        &self,
        event: Envelope<AuthLinkIssued>,
        _delivery: Delivery,
    ) -> Result<(), HandlerError> {
        if event.payload.user_email.as_str() == "refused@example.com" {
            Err(HandlerError::Permanent("550 no such user".into()))
        } else {
            Ok(())
        }
    }
}

/// Parks every connection-failed event, with an error too long for the list table.
struct Metadata;

impl EventHandler<ConnectionFailed> for Metadata {
    async fn handle(
        &self,
        _event: Envelope<ConnectionFailed>,
        _delivery: Delivery,
    ) -> Result<(), HandlerError> {
        Err(HandlerError::Permanent(LONG_ERROR.into()))
    }
}

fn spec<E: StreamEvent>(durable: &'static str, ns: &Namespace) -> ConsumerSpec {
    ConsumerSpec {
        durable,
        filter_subject: ns.event_filter::<E>(),
        ack_wait: Duration::from_secs(5),
        max_deliver: 3,
        max_ack_pending: 100,
        concurrency: 1,
        retry_delays: vec![Duration::from_millis(100)],
    }
}

/// One test's namespace on the shared nats-server, with both streams provisioned.
struct Nats {
    ctx: TestContext,
    ns: Namespace,
    js: jetstream::Context,
}

impl Nats {
    async fn new() -> Self {
        let ctx = TestContext::new();
        let config = ctx.common(&[]);
        let client = service_kit::nats::connect(
            &config.nats_url,
            &config.nats,
            &config.namespace,
            "ops-cli-test",
            Duration::from_secs(10),
        )
        .await
        .expect("connect");
        let js = jetstream::new(client);
        service_kit::nats::ensure_streams(&js, &config.namespace, &config.streams)
            .await
            .expect("streams");
        Self {
            ctx,
            ns: config.namespace,
            js,
        }
    }

    async fn events(&self) -> Stream {
        self.js
            .get_stream(self.ns.events_stream())
            .await
            .expect("events stream")
    }

    async fn dlq(&self) -> Stream {
        self.js
            .get_stream(self.ns.dead_letter_stream())
            .await
            .expect("dead-letter stream")
    }

    async fn count(stream: Stream) -> u64 {
        stream.get_info().await.expect("info").state.messages
    }

    async fn publish<E: StreamEvent>(&self, event: &Envelope<E>) -> u64 {
        service_kit::nats::publish_event(&self.js, &self.ns, event)
            .await
            .expect("publish")
            .sequence
    }

    /// Runs `gcal-ops ARGS` in-process with `--nats-url`/`--namespace` pointing here (no
    /// environment): what it printed, and how it ended.
    async fn ops(&self, args: &[&str]) -> (anyhow::Result<()>, String) {
        let mut argv = vec![
            "gcal-ops",
            "--nats-url",
            &self.ctx.nats_url,
            "--namespace",
            &self.ctx.id,
        ];
        argv.extend_from_slice(args);
        run_ops(&argv, Env::from_pairs(self.operator_env())).await
    }

    /// Only the operator's credentials and the CA: what an operator's shell holds.
    fn operator_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "NATS_CREDS_FILE".into(),
                self.ctx.creds(schemas::bus_access::Identity::Operator),
            ),
            ("NATS_TLS_CA_FILE".into(), e2e::nats_auth::auth().ca.clone()),
        ]
    }

    /// `gcal-ops --json ARGS`, which must succeed: its one JSON document.
    async fn ops_json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let (result, out) = self.ops(&with_json).await;
        result.unwrap_or_else(|e| panic!("gcal-ops {args:?} failed: {e:#}\n{out}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

async fn run_ops(argv: &[&str], env: Env) -> (anyhow::Result<()>, String) {
    let cli = ops::Cli::try_parse_from(argv).expect("a valid command line");
    let mut out = Vec::new();
    let result = ops::run_with_env(cli, env, &mut out).await;
    (result, String::from_utf8(out).expect("UTF-8 output"))
}

/// What the parked fixture holds.
struct Parked {
    nats: Nats,
    refused: Envelope<AuthLinkIssued>,
    refused_seq: u64,
    failed: Envelope<ConnectionFailed>,
    garbage_seq: u64,
}

/// Domain stream: 1 ok@ (acked), 2 refused@ (parked by the mailer: 550), 3 garbage with
/// message id `garbage-1` (parked: undecodable), 4 connection-failed (parked by metadata).
/// The consumers are stopped before the test goes on, so nothing consumes a replay.
async fn parked() -> Parked {
    let nats = Nats::new().await;
    let ns = nats.ns.clone();
    assert_eq!(nats.publish(&auth_link("ok@example.com")).await, 1);
    let refused = auth_link("refused@example.com");
    let refused_seq = nats.publish(&refused).await;
    let garbage = jetstream::message::PublishMessage::build()
        .payload("{not json".into())
        .message_id("garbage-1");
    let garbage_seq = nats
        .js
        .send_publish(ns.event::<AuthLinkIssued>(&sub_a()), garbage)
        .await
        .expect("publish")
        .await
        .expect("ack")
        .sequence;
    let failed = connection_failed();
    nats.publish(&failed).await;

    let shutdown = CancellationToken::new();
    let mailer_spec = spec::<AuthLinkIssued>(MAILER, &ns);
    let metadata_spec = spec::<ConnectionFailed>(METADATA, &ns);
    let mailer = ensure_consumer(&nats.js, &ns, &mailer_spec)
        .await
        .expect("consumer");
    let metadata = ensure_consumer(&nats.js, &ns, &metadata_spec)
        .await
        .expect("consumer");
    let running = [
        tokio::spawn(run::<AuthLinkIssued, _>(
            nats.js.clone(),
            ns.clone(),
            mailer,
            mailer_spec,
            Arc::new(Mailer),
            shutdown.clone(),
            Duration::from_secs(5),
        )),
        tokio::spawn(run::<ConnectionFailed, _>(
            nats.js.clone(),
            ns.clone(),
            metadata,
            metadata_spec,
            Arc::new(Metadata),
            shutdown.clone(),
            Duration::from_secs(5),
        )),
    ];
    let mut parked = 0;
    for _ in 0..150 {
        parked = Nats::count(nats.dlq().await).await;
        if parked == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(parked, 3, "three messages should have been dead-lettered");
    shutdown.cancel();
    for task in running {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("consumer stops")
            .expect("no panic");
    }
    Parked {
        nats,
        refused,
        refused_seq,
        failed,
        garbage_seq,
    }
}

fn by_original_sequence(list: &Value, original: u64) -> &Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|l| l["originalSequence"] == original)
        .unwrap_or_else(|| panic!("no dead letter of original {original} in {list:#}"))
}

fn dead_letter_seq(list: &Value, original: u64) -> u64 {
    by_original_sequence(list, original)["sequence"]
        .as_u64()
        .expect("sequence")
}

fn header(message: &jetstream::message::StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|v| v.as_str().to_owned())
}

#[tokio::test]
async fn dlq_list_shows_each_dead_letter_with_who_parked_it_and_why() {
    let p = parked().await;
    let ns = &p.nats.ns;
    let list = p.nats.ops_json(&["dlq", "list"]).await;
    assert_eq!(list.as_array().expect("array").len(), 3, "{list:#}");

    let refused = by_original_sequence(&list, p.refused_seq);
    assert_eq!(refused["consumer"], MAILER);
    assert_eq!(refused["subject"], ns.event::<AuthLinkIssued>(&sub_a()));
    assert_eq!(refused["deliveries"], 1);
    assert_eq!(refused["lastError"], "550 no such user");
    assert_eq!(refused["firstError"], "550 no such user");
    assert_eq!(refused["eventType"], "auth-link-issued");
    assert_eq!(refused["eventId"], p.refused.id.to_string());
    assert_eq!(
        refused["correlationId"],
        p.refused.correlation_id.to_string()
    );
    let parked_at = refused["parkedAt"].as_str().expect("parkedAt");
    let parked_at = chrono::DateTime::parse_from_rfc3339(parked_at).expect("RFC 3339");
    assert!((Utc::now() - parked_at.with_timezone(&Utc)).num_seconds() < 60);

    let garbage = by_original_sequence(&list, p.garbage_seq);
    assert!(
        garbage["lastError"]
            .as_str()
            .expect("error")
            .contains("undecodable auth-link-issued event"),
        "{garbage:#}"
    );
    assert_eq!(
        garbage["eventId"],
        Value::Null,
        "no envelope to read it from"
    );

    let failed = by_original_sequence(&list, 4);
    assert_eq!(failed["consumer"], METADATA);
    assert_eq!(failed["eventType"], "connection-failed");
    assert_eq!(failed["eventId"], p.failed.id.to_string());
    assert_eq!(failed["lastError"], LONG_ERROR, "JSON has the whole error");

    // Filters.
    let by_consumer = p
        .nats
        .ops_json(&["dlq", "list", "--consumer", METADATA])
        .await;
    assert_eq!(by_consumer.as_array().expect("array").len(), 1);
    assert_eq!(by_consumer[0]["eventId"], p.failed.id.to_string());
    let auth_links = format!("{}.events.auth-link.>", ns.prefix());
    let by_subject = p
        .nats
        .ops_json(&["dlq", "list", "--subject", &auth_links])
        .await;
    let mut originals: Vec<u64> = by_subject
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["originalSequence"].as_u64().expect("seq"))
        .collect();
    originals.sort_unstable();
    assert_eq!(originals, [p.refused_seq, p.garbage_seq]);
    let none = p
        .nats
        .ops_json(&[
            "dlq",
            "list",
            "--subject",
            &format!("{}.events.connection.succeeded.*", ns.prefix()),
        ])
        .await;
    assert_eq!(none, Value::Array(Vec::new()));
    let limited = p.nats.ops_json(&["dlq", "list", "--limit", "1"]).await;
    assert_eq!(limited.as_array().expect("array").len(), 1);
    assert_eq!(limited[0]["sequence"], 1, "oldest first");
    let recent = p.nats.ops_json(&["dlq", "list", "--since", "10m"]).await;
    assert_eq!(recent.as_array().expect("array").len(), 3);
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later = p.nats.ops_json(&["dlq", "list", "--since", &future]).await;
    assert_eq!(later, Value::Array(Vec::new()));

    // The table: one line per dead letter under a header, the long error cut short.
    let (result, table) = p.nats.ops(&["dlq", "list"]).await;
    result.expect("list");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for column in [
        "SEQ",
        "PARKED AT",
        "CONSUMER",
        "SUBJECT",
        "DELIVERIES",
        "EVENT TYPE",
        "EVENT ID",
        "LAST ERROR",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(table.contains("550 no such user") && table.contains(&p.refused.id.to_string()));
    assert!(
        !table.contains(LONG_ERROR) && table.contains("tenant database unavailable"),
        "{table}"
    );

    // Settings from the environment, as the services read them, instead of flags.
    let (result, out) = run_ops(
        &["gcal-ops", "--json", "dlq", "list", "--consumer", MAILER],
        Env::from_pairs(
            p.nats.ctx.settings(&[(
                "NATS_CREDS_FILE",
                p.nats
                    .ctx
                    .creds(schemas::bus_access::Identity::OperatorReadonly)
                    .as_str(),
            )]),
        ),
    )
    .await;
    result.expect("list with settings from the environment");
    let from_env: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(from_env.as_array().expect("array").len(), 2);
}

#[tokio::test]
async fn dlq_show_gives_every_header_the_payload_and_both_errors() {
    let p = parked().await;
    let list = p.nats.ops_json(&["dlq", "list"]).await;
    let seq = dead_letter_seq(&list, p.refused_seq).to_string();

    let shown = p.nats.ops_json(&["dlq", "show", &seq]).await;
    assert_eq!(shown["sequence"].to_string(), seq);
    assert_eq!(shown["stream"], p.nats.ns.dead_letter_stream());
    assert_eq!(
        shown["headers"][headers::DEAD_LETTER_CONSUMER],
        serde_json::json!([MAILER])
    );
    assert_eq!(
        shown["headers"][headers::EVENT_TYPE],
        serde_json::json!(["auth-link-issued"])
    );
    assert_eq!(
        shown["headers"][headers::DEAD_LETTER_STREAM_SEQUENCE],
        serde_json::json!([p.refused_seq.to_string()])
    );
    assert_eq!(shown["firstError"], "550 no such user");
    assert_eq!(shown["lastError"], "550 no such user");
    assert_eq!(shown["payload"]["id"], p.refused.id.to_string());
    assert_eq!(
        shown["payload"]["payload"]["userEmail"],
        "refused@example.com"
    );
    assert_eq!(shown["payloadText"], Value::Null);

    let (result, text) = p.nats.ops(&["dlq", "show", &seq]).await;
    result.expect("show");
    assert!(
        text.contains(&format!(
            "dead letter {seq} in {}",
            p.nats.ns.dead_letter_stream()
        )),
        "{text}"
    );
    assert!(
        text.contains("\"userEmail\": \"refused@example.com\""),
        "pretty JSON: {text}"
    );
    assert!(
        text.contains(&format!("{}: {MAILER}", headers::DEAD_LETTER_CONSUMER)),
        "{text}"
    );

    let garbage = dead_letter_seq(&list, p.garbage_seq).to_string();
    let shown = p.nats.ops_json(&["dlq", "show", &garbage]).await;
    assert_eq!(shown["payload"], Value::Null);
    assert_eq!(shown["payloadText"], "{not json");

    let (result, out) = p.nats.ops(&["dlq", "show", "42"]).await;
    let err = result.expect_err("no such dead letter");
    assert!(
        err.to_string().contains(&format!(
            "no dead letter with sequence 42 in {}",
            p.nats.ns.dead_letter_stream()
        )),
        "{err}"
    );
    assert_eq!(ops::exit_code(&err), 1);
    assert!(out.is_empty(), "{out}");
}

#[tokio::test]
async fn dlq_replay_puts_the_original_back_with_a_new_id_and_removes_the_dead_letter() {
    let p = parked().await;
    let list = p.nats.ops_json(&["dlq", "list"]).await;
    let seq = dead_letter_seq(&list, p.refused_seq);

    // A dry run says what would happen and changes nothing.
    let dry = p
        .nats
        .ops_json(&["dlq", "replay", &seq.to_string(), "--dry-run"])
        .await;
    assert_eq!(dry[0]["result"], "would-replay", "{dry:#}");
    assert_eq!(
        dry[0]["subject"],
        p.nats.ns.event::<AuthLinkIssued>(&sub_a())
    );
    assert_eq!(dry[0]["originalMsgId"], p.refused.id.to_string());
    assert_eq!(dry[0]["newSequence"], Value::Null);
    assert_eq!(Nats::count(p.nats.events().await).await, 4);
    assert_eq!(Nats::count(p.nats.dlq().await).await, 3);

    let replayed = p.nats.ops_json(&["dlq", "replay", &seq.to_string()]).await;
    assert_eq!(replayed[0]["result"], "replayed", "{replayed:#}");
    assert_eq!(replayed[0]["newSequence"], 5);
    let new_id = replayed[0]["newMsgId"].as_str().expect("new id").to_owned();

    let events = p.nats.events().await;
    let replay = events
        .get_raw_message(5)
        .await
        .expect("the replay is stored");
    let original = events
        .get_raw_message(p.refused_seq)
        .await
        .expect("original");
    assert_eq!(
        replay.subject, original.subject,
        "back on its original subject"
    );
    assert_eq!(replay.payload, original.payload, "the original payload");
    assert_eq!(
        header(&replay, "Nats-Msg-Id").as_deref(),
        Some(new_id.as_str())
    );
    let parsed = uuid::Uuid::parse_str(&new_id).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 7);
    assert_ne!(parsed, p.refused.id);
    assert_eq!(
        header(&replay, headers::ORIGINAL_MSG_ID),
        Some(p.refused.id.to_string())
    );
    assert_eq!(
        header(&replay, headers::EVENT_TYPE).as_deref(),
        Some("auth-link-issued")
    );
    assert_eq!(
        header(&replay, headers::CORRELATION_ID),
        Some(p.refused.correlation_id.to_string())
    );
    for dead_letter_header in [
        headers::DEAD_LETTER_SUBJECT,
        headers::DEAD_LETTER_CONSUMER,
        headers::DEAD_LETTER_LAST_ERROR,
        headers::DEAD_LETTER_PARKED_AT,
    ] {
        assert_eq!(
            header(&replay, dead_letter_header),
            None,
            "{dead_letter_header}"
        );
    }

    // Gone from the DLQ, so a second replay of it fails and publishes nothing.
    assert_eq!(Nats::count(p.nats.dlq().await).await, 2);
    let (result, out) = p.nats.ops(&["dlq", "replay", &seq.to_string()]).await;
    let err = result.expect_err("already replayed");
    assert_eq!(ops::exit_code(&err), 1);
    let missing = format!(
        "no dead letter with sequence {seq} in {}",
        p.nats.ns.dead_letter_stream()
    );
    assert!(out.contains(&missing) && out.contains("failed"), "{out}");
    assert!(err.to_string().contains(&missing), "{err}");
    assert_eq!(Nats::count(p.nats.events().await).await, 5);

    // The undecodable one has no envelope id: its original id comes from the domain stream.
    let garbage = dead_letter_seq(&list, p.garbage_seq);
    let replayed = p
        .nats
        .ops_json(&["dlq", "replay", &garbage.to_string()])
        .await;
    assert_eq!(replayed[0]["result"], "replayed");
    assert_eq!(replayed[0]["originalMsgId"], "garbage-1");
    let replay = p
        .nats
        .events()
        .await
        .get_raw_message(6)
        .await
        .expect("stored");
    assert_eq!(&replay.payload[..], b"{not json");
    assert_eq!(
        header(&replay, headers::ORIGINAL_MSG_ID).as_deref(),
        Some("garbage-1")
    );
}

#[tokio::test]
async fn dlq_replay_all_takes_only_the_chosen_consumers_dead_letters() {
    let p = parked().await;
    let dry = p
        .nats
        .ops_json(&["dlq", "replay", "--all", "--dry-run"])
        .await;
    assert_eq!(dry.as_array().expect("array").len(), 3);
    assert!(
        dry.as_array()
            .expect("array")
            .iter()
            .all(|o| o["result"] == "would-replay")
    );
    assert_eq!(Nats::count(p.nats.events().await).await, 4);
    assert_eq!(Nats::count(p.nats.dlq().await).await, 3);

    let (result, text) = p
        .nats
        .ops(&["dlq", "replay", "--all", "--consumer", METADATA])
        .await;
    result.expect("replay");
    assert!(
        text.contains("replayed") && text.contains("1 replayed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("original id {}", p.failed.id)),
        "{text}"
    );
    let replay = p
        .nats
        .events()
        .await
        .get_raw_message(5)
        .await
        .expect("stored");
    assert_eq!(
        replay.subject.as_str(),
        p.nats.ns.event::<ConnectionFailed>(&sub_b())
    );
    assert_eq!(
        header(&replay, headers::ORIGINAL_MSG_ID),
        Some(p.failed.id.to_string())
    );
    let left = p.nats.ops_json(&["dlq", "list"]).await;
    let left = left.as_array().expect("array");
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|l| l["consumer"] == MAILER), "{left:?}");
}

#[tokio::test]
async fn dlq_purge_deletes_exactly_what_it_names() {
    let p = parked().await;
    let list = p.nats.ops_json(&["dlq", "list"]).await;
    let refused = dead_letter_seq(&list, p.refused_seq).to_string();

    let dry = p
        .nats
        .ops_json(&["dlq", "purge", &refused, "--dry-run"])
        .await;
    assert_eq!(dry[0]["result"], "would-delete");
    assert_eq!(Nats::count(p.nats.dlq().await).await, 3);

    let (result, text) = p.nats.ops(&["dlq", "purge", &refused]).await;
    result.expect("purge");
    assert!(
        text.starts_with(&format!(
            "deleting 1 dead letter from {}:",
            p.nats.ns.dead_letter_stream()
        )),
        "{text}"
    );
    assert!(
        text.contains("550 no such user") && text.contains("1 deleted"),
        "{text}"
    );
    assert_eq!(Nats::count(p.nats.dlq().await).await, 2);
    assert_eq!(
        Nats::count(p.nats.events().await).await,
        4,
        "the domain stream is untouched"
    );

    let purged = p
        .nats
        .ops_json(&["dlq", "purge", "--all", "--consumer", METADATA])
        .await;
    assert_eq!(purged.as_array().expect("array").len(), 1);
    assert_eq!(purged[0]["result"], "deleted");
    assert_eq!(purged[0]["deadLetter"]["consumer"], METADATA);
    let left = p.nats.ops_json(&["dlq", "list"]).await;
    assert_eq!(left.as_array().expect("array").len(), 1);
    assert_eq!(left[0]["originalSequence"], p.garbage_seq);

    let (result, _) = p.nats.ops(&["dlq", "purge", "999"]).await;
    let err = result.expect_err("unknown");
    assert!(
        err.to_string().contains("no dead letter with sequence 999"),
        "{err}"
    );
    assert_eq!(ops::exit_code(&err), 1);
    assert_eq!(Nats::count(p.nats.dlq().await).await, 1);
}

#[tokio::test]
async fn events_replay_by_sequence_range_republishes_exactly_those() {
    let nats = Nats::new().await;
    let mut ids = HashMap::new();
    for seq in 1..=5u64 {
        let id = if seq % 2 == 1 {
            let e = auth_link(&format!("u{seq}@example.com"));
            assert_eq!(nats.publish(&e).await, seq);
            e.id
        } else {
            let e = connection_failed();
            assert_eq!(nats.publish(&e).await, seq);
            e.id
        };
        ids.insert(seq, id);
    }
    let everything = format!("{}.events.>", nats.ns.prefix());

    let dry = nats
        .ops_json(&[
            "events",
            "replay",
            "--subject",
            &everything,
            "--from-seq",
            "2",
            "--to-seq",
            "4",
            "--dry-run",
        ])
        .await;
    let sequences: Vec<u64> = dry
        .as_array()
        .expect("array")
        .iter()
        .map(|o| o["sequence"].as_u64().expect("seq"))
        .collect();
    assert_eq!(sequences, [2, 3, 4]);
    assert!(
        dry.as_array()
            .expect("array")
            .iter()
            .all(|o| o["result"] == "would-replay")
    );
    assert_eq!(Nats::count(nats.events().await).await, 5);

    let replayed = nats
        .ops_json(&[
            "events",
            "replay",
            "--subject",
            &everything,
            "--from-seq",
            "2",
            "--to-seq",
            "4",
        ])
        .await;
    assert_eq!(replayed.as_array().expect("array").len(), 3, "{replayed:#}");
    let events = nats.events().await;
    assert_eq!(Nats::count(nats.events().await).await, 8);
    for (new_seq, source) in [(6u64, 2u64), (7, 3), (8, 4)] {
        let replay = events.get_raw_message(new_seq).await.expect("replay");
        let original = events.get_raw_message(source).await.expect("original");
        assert_eq!(replay.subject, original.subject);
        assert_eq!(replay.payload, original.payload);
        assert_eq!(
            header(&replay, headers::ORIGINAL_MSG_ID),
            Some(ids[&source].to_string())
        );
        assert_ne!(
            header(&replay, "Nats-Msg-Id"),
            Some(ids[&source].to_string())
        );
        assert_eq!(
            header(&replay, headers::EVENT_TYPE),
            header(&original, headers::EVENT_TYPE)
        );
    }

    // A subject filter picks only its family; a replay of a replay keeps the first id.
    let auth_links = format!("{}.events.auth-link.issued.*", nats.ns.prefix());
    let replayed = nats
        .ops_json(&[
            "events",
            "replay",
            "--subject",
            &auth_links,
            "--from-seq",
            "5",
        ])
        .await;
    let sequences: Vec<u64> = replayed
        .as_array()
        .expect("array")
        .iter()
        .map(|o| o["sequence"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        sequences,
        [5, 7],
        "auth-link events from 5 to the end (8 is connection-failed)"
    );
    let replay_of_replay = events.get_raw_message(10).await.expect("stored");
    assert_eq!(
        header(&replay_of_replay, headers::ORIGINAL_MSG_ID),
        Some(ids[&3].to_string())
    );
    assert_eq!(Nats::count(nats.events().await).await, 10);
}

#[tokio::test]
async fn events_replay_since_takes_only_newer_events_of_the_subject() {
    let nats = Nats::new().await;
    nats.publish(&auth_link("old@example.com")).await;
    nats.publish(&connection_failed()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = auth_link("new@example.com");
    nats.publish(&new).await;
    nats.publish(&connection_failed()).await;

    let (result, text) = nats
        .ops(&[
            "events",
            "replay",
            "--subject",
            &format!("{}.events.auth-link.>", nats.ns.prefix()),
            "--since",
            &since,
        ])
        .await;
    result.expect("replay");
    assert!(text.contains("1 replayed"), "{text}");
    assert_eq!(Nats::count(nats.events().await).await, 5);
    let replay = nats
        .events()
        .await
        .get_raw_message(5)
        .await
        .expect("stored");
    assert_eq!(
        header(&replay, headers::ORIGINAL_MSG_ID),
        Some(new.id.to_string())
    );

    // Nothing in range: an empty report, not an error.
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = nats
        .ops_json(&[
            "events",
            "replay",
            "--subject",
            &format!("{}.events.>", nats.ns.prefix()),
            "--since",
            &future,
        ])
        .await;
    assert_eq!(none, Value::Array(Vec::new()));

    // A filter outside the domain stream is a usage error, before anything is published.
    let (result, _) = nats
        .ops(&[
            "events",
            "replay",
            "--subject",
            "other.events.>",
            "--from-seq",
            "1",
        ])
        .await;
    let err = result.expect_err("outside the stream");
    assert_eq!(ops::exit_code(&err), 2);
    assert!(err.to_string().contains(&nats.ns.events_stream()), "{err}");
    assert_eq!(Nats::count(nats.events().await).await, 5);
}

#[tokio::test]
async fn a_missing_stream_or_bad_setting_says_what_to_fix() {
    let nats = Nats::new().await;
    let (result, _) = run_ops(
        &[
            "gcal-ops",
            "--nats-url",
            &nats.ctx.nats_url,
            "--namespace",
            "no-such-deployment",
            "dlq",
            "list",
        ],
        // The test's own user: an operator's credentials cover only their deployment's
        // namespace (its JetStream API calls elsewhere are refused and time out).
        Env::from_pairs(nats.ctx.settings(&[])),
    )
    .await;
    let err = result.expect_err("no stream");
    assert!(
        err.to_string()
            .contains("NO_SUCH_DEPLOYMENT_DEAD_LETTERS does not exist"),
        "{err}"
    );
    assert!(err.to_string().contains("NATS_NAMESPACE"), "{err}");
    assert_eq!(ops::exit_code(&err), 1);

    let (result, _) = run_ops(
        &["gcal-ops", "dlq", "list"],
        Env::from_pairs([("NATS_NAMESPACE", "Not.Valid")]),
    )
    .await;
    let err = result.expect_err("bad setting");
    assert!(err.to_string().contains("NATS_NAMESPACE"), "{err}");
    assert_eq!(ops::exit_code(&err), 78);
}

#[tokio::test]
async fn a_replay_stops_at_its_deadline_reports_what_it_did_and_exits_75() {
    let p = parked().await;
    let list = p.nats.ops_json(&["dlq", "list"]).await;
    let refused = dead_letter_seq(&list, p.refused_seq);
    let failed = dead_letter_seq(&list, 4);
    let garbage = dead_letter_seq(&list, p.garbage_seq);

    // JetStream never acknowledges a connection-failed replay: the domain stream no longer
    // takes that subject, and a subscriber that never answers holds the publish open.
    let mut config = p.nats.events().await.cached_info().config.clone();
    config.subjects = vec![p.nats.ns.event_filter::<AuthLinkIssued>()];
    p.nats.js.update_stream(config).await.expect("narrowed");
    let _silent = p
        .nats
        .js
        .client()
        .subscribe(p.nats.ns.event_filter::<ConnectionFailed>())
        .await
        .expect("subscribe");

    let (result, out) = p
        .nats
        .ops(&[
            "--json",
            "--deadline",
            "2s",
            "dlq",
            "replay",
            &refused.to_string(),
            &failed.to_string(),
            &garbage.to_string(),
        ])
        .await;
    let err = result.expect_err("stopped at the deadline");
    assert_eq!(ops::exit_code(&err), ops::EXIT_DEADLINE, "{err:#}");
    let reached = err
        .downcast_ref::<ops::DeadlineReached>()
        .expect("a deadline error");
    assert_eq!(
        (reached.done, reached.interrupted, reached.not_attempted),
        (1, 1, 1)
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let results: Vec<(u64, &str)> = report
        .as_array()
        .expect("array")
        .iter()
        .map(|o| {
            (
                o["sequence"].as_u64().expect("seq"),
                o["result"].as_str().expect("result"),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            (refused, "replayed"),
            (failed, "interrupted"),
            (garbage, "not-attempted")
        ]
    );
    // What was not surely replayed is still parked for the next run.
    let left: Vec<u64> = p
        .nats
        .ops_json(&["dlq", "list"])
        .await
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["sequence"].as_u64().expect("seq"))
        .collect();
    assert_eq!(left, [failed.min(garbage), failed.max(garbage)]);
}
