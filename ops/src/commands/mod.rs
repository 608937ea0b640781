//! One file per command; this module holds what they share: the connection, the checks that
//! need the namespace, and re-publishing a stored message as a replay.

mod dlq_list;
mod dlq_purge;
mod dlq_replay;
mod dlq_show;
mod events_replay;

use std::io::Write;

use async_nats::HeaderMap;
use async_nats::jetstream;
use schemas::subjects::{Namespace, headers};

use crate::UsageError;
use crate::cli::{Command, DlqCommand, EventsCommand, SecretsCommand};
use crate::deadline::Deadline;
use crate::reader::{self, RangeReader, Start, Stored};
use crate::subject::{ConsumerName, SubjectFilter};

/// What every command works with.
#[derive(Debug)]
pub struct Ops {
    pub js: jetstream::Context,
    pub ns: Namespace,
    pub json: bool,
    /// The overall bound on a replay (`--deadline`).
    pub deadline: Deadline,
}

impl Ops {
    /// Whether a progress bar may be drawn (never in `--json` mode).
    fn progress_wanted(&self) -> bool {
        !self.json
    }

    /// The filter matching every subject of the domain stream (`<prefix>.events.>`).
    fn events_subjects(&self) -> SubjectFilter {
        self.ns
            .events_stream_subjects()
            .join(",")
            .parse()
            .unwrap_or_else(|e| panic!("the namespace makes valid subjects: {e}"))
    }
}

/// Checks that need the namespace but no connection, so a wrong command line fails at once.
pub fn check(command: &Command, ns: &Namespace) -> Result<(), UsageError> {
    if let Command::Events(EventsCommand::Replay(args)) = command {
        if !args.subject.is_within(&[ns.prefix(), "events"]) {
            return Err(UsageError(format!(
                "--subject {} is not within {} (the subjects of {}): start it with {}.events., \
                 e.g. {}.events.connection.*.* or {}.events.>",
                args.subject,
                ns.events_stream_subjects().join(", "),
                ns.events_stream(),
                ns.prefix(),
                ns.prefix(),
                ns.prefix()
            )));
        }
        if let (Some(from), Some(to)) = (args.from_seq, args.to_seq)
            && to < from
        {
            return Err(UsageError(format!(
                "--to-seq {to} is before --from-seq {from}"
            )));
        }
    }
    Ok(())
}

pub async fn dispatch(ops: &Ops, command: Command, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Dlq(DlqCommand::List(args)) => dlq_list::run(ops, args, out).await,
        Command::Dlq(DlqCommand::Show(args)) => dlq_show::run(ops, args, out).await,
        Command::Dlq(DlqCommand::Replay(args)) => dlq_replay::run(ops, args, out).await,
        Command::Dlq(DlqCommand::Purge(args)) => dlq_purge::run(ops, args, out).await,
        Command::Events(EventsCommand::Replay(args)) => events_replay::run(ops, args, out).await,
        // Handled before connecting (see `run_with_env`); here for completeness.
        Command::Secrets(SecretsCommand::Generate) => {
            Ok(crate::secrets::generate(chrono::Utc::now(), out)?)
        }
        Command::NatsAuth(_) => Err(anyhow::anyhow!(
            "nats-auth commands run without a connection (see `run_with_env`)"
        )),
    }
}

/// The dead letters present now, oldest first: those parked by `consumer` (server-side
/// filter on the dead-letter subject), whose original subject matches `subject`, parked at or
/// after `since`; at most `limit`.
async fn dead_letters(
    ops: &Ops,
    dlq: &jetstream::stream::Stream,
    consumer: Option<&ConsumerName>,
    subject: Option<&SubjectFilter>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Stored>> {
    let filter = match consumer {
        Some(c) => ops.ns.dead_letter(c.as_str()),
        None => ops.ns.dead_letter_stream_subjects().join(","),
    };
    let start = since.map_or(Start::All, Start::Time);
    let last = reader::last_sequence(dlq).await?;
    RangeReader::open(dlq, &filter, start, last)
        .await?
        .collect(limit, |letter| {
            subject.is_none_or(|f| {
                letter
                    .header(headers::DEAD_LETTER_SUBJECT)
                    .is_some_and(|s| f.matches(s))
            })
        })
        .await
}

/// The message was not found: the error an operator sees for a wrong sequence.
fn no_dead_letter(sequence: u64, ops: &Ops) -> String {
    format!(
        "no dead letter with sequence {sequence} in {} (see `gcal-ops dlq list`)",
        ops.ns.dead_letter_stream()
    )
}

/// A replay as JetStream stored it.
#[derive(Debug, Clone)]
struct Republished {
    sequence: u64,
    msg_id: String,
}

/// Publishes `payload` on `subject` as a replay of a stored message and waits for the
/// JetStream acknowledgement: a fresh UUIDv7 as `Nats-Msg-Id` (the original id could be
/// dropped as a duplicate), the original id in `Gcal-Original-Msg-Id`, and the source's other
/// headers (event type, correlation id, trace context) kept.
async fn republish(
    js: &jetstream::Context,
    subject: &str,
    source: &HeaderMap,
    payload: &[u8],
    original_msg_id: Option<&str>,
) -> Result<Republished, String> {
    let msg_id = uuid::Uuid::now_v7().to_string();
    let message = jetstream::message::PublishMessage::build()
        .payload(payload.to_vec().into())
        .headers(replay_headers(source, &msg_id, original_msg_id));
    let ack = js
        .send_publish(subject.to_owned(), message)
        .await
        .map_err(|e| format!("publishing to {subject} failed: {e}"))?
        .await
        .map_err(|e| format!("JetStream did not acknowledge the replay on {subject}: {e}"))?;
    if ack.duplicate {
        return Err(format!(
            "JetStream dropped the replay on {subject} as a duplicate of message id {msg_id}"
        ));
    }
    Ok(Republished {
        sequence: ack.sequence,
        msg_id,
    })
}

/// Headers with which the dead letter was parked, and JetStream's own (`Nats-*`: message id,
/// expectations), are not carried over to a replay.
const DEAD_LETTER_HEADERS: [&str; 9] = [
    headers::DEAD_LETTER_SUBJECT,
    headers::DEAD_LETTER_STREAM_SEQUENCE,
    headers::DEAD_LETTER_CONSUMER,
    headers::DEAD_LETTER_DELIVERIES,
    headers::DEAD_LETTER_FIRST_ERROR,
    headers::DEAD_LETTER_LAST_ERROR,
    headers::DEAD_LETTER_PUBLISHED_AT,
    headers::DEAD_LETTER_PARKED_AT,
    headers::ORIGINAL_MSG_ID,
];

fn replay_headers(source: &HeaderMap, msg_id: &str, original_msg_id: Option<&str>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in source.iter() {
        let text = name.to_string();
        let dropped = text.to_ascii_lowercase().starts_with("nats-")
            || DEAD_LETTER_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&text));
        if !dropped {
            for value in values {
                out.append(name.clone(), value.clone());
            }
        }
    }
    out.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    if let Some(original) = original_msg_id {
        out.insert(headers::ORIGINAL_MSG_ID, original);
    }
    out
}

/// The id the event was first published with: kept from an earlier replay if this message
/// is one, else the stored message's own `Nats-Msg-Id`.
fn first_msg_id(message: &Stored) -> Option<String> {
    message
        .header(headers::ORIGINAL_MSG_ID)
        .or_else(|| message.header(async_nats::header::NATS_MESSAGE_ID.as_ref()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_keeps_the_event_headers_and_gets_a_new_id() {
        let mut source = HeaderMap::new();
        source.insert(async_nats::header::NATS_MESSAGE_ID, "mailer-worker-4");
        source.insert("Nats-Expected-Stream", "X");
        source.insert(headers::EVENT_TYPE, "auth-link-issued");
        source.insert(headers::CORRELATION_ID, "c-1");
        source.insert("traceparent", "00-abc-def-01");
        source.insert(headers::DEAD_LETTER_SUBJECT, "gcal.events.x");
        source.insert(headers::DEAD_LETTER_LAST_ERROR, "boom");
        source.insert(headers::ORIGINAL_MSG_ID, "stale");
        let out = replay_headers(&source, "new-id", Some("first-id"));
        let get = |n: &str| out.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("new-id"));
        assert_eq!(get(headers::ORIGINAL_MSG_ID).as_deref(), Some("first-id"));
        assert_eq!(
            get(headers::EVENT_TYPE).as_deref(),
            Some("auth-link-issued")
        );
        assert_eq!(get(headers::CORRELATION_ID).as_deref(), Some("c-1"));
        assert_eq!(get("traceparent").as_deref(), Some("00-abc-def-01"));
        assert_eq!(get("Nats-Expected-Stream"), None);
        assert_eq!(get(headers::DEAD_LETTER_SUBJECT), None);
        assert_eq!(get(headers::DEAD_LETTER_LAST_ERROR), None);
        assert_eq!(out.iter().count(), 5);
    }
}
