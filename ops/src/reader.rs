//! Reading stored messages: one by sequence (`STREAM.MSG.GET`), or a range through an ephemeral
//! ordered consumer. Nothing here creates a durable consumer or acknowledges anything, so
//! reading never changes what the services' consumers see.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;

/// How long a range read waits for the next message the server said is there.
const STALL_LIMIT: Duration = Duration::from_secs(15);

/// One message as it is stored in a stream, however it was read.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
    /// When the stream stored it.
    pub stored_at: DateTime<Utc>,
}

impl Stored {
    /// The first value of header `name`, if present (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.to_string().eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(|v| v.as_str())
    }

    fn from_stream_message(message: jetstream::message::StreamMessage) -> Self {
        Self {
            sequence: message.sequence,
            subject: message.subject.to_string(),
            headers: message.headers,
            payload: message.payload.to_vec(),
            stored_at: to_utc(&message.time),
        }
    }
}

/// The server's timestamps as chrono (the type service-kit and the envelope use).
fn to_utc(at: &async_nats::datetime::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond()).unwrap_or_default()
}

/// Opens a stream, or says which setting to check when it does not exist.
pub async fn open_stream(js: &jetstream::Context, name: &str) -> anyhow::Result<stream::Stream> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(stream),
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            Err(anyhow!(
                "stream {name} does not exist on this NATS server: check NATS_NAMESPACE (or \
                 --namespace) and NATS_URL; the services create it when they start"
            ))
        }
        Err(e) => Err(anyhow!("cannot open stream {name}: {e}")),
    }
}

/// The sequence of the last message stored in `stream` right now (0 when empty).
pub async fn last_sequence(stream: &stream::Stream) -> anyhow::Result<u64> {
    let info = stream.get_info().await.with_context(|| {
        format!(
            "cannot read the state of stream {}",
            stream.cached_info().config.name
        )
    })?;
    Ok(info.state.last_sequence)
}

/// The message stored at `sequence`, or `None` when there is none (never was, or deleted).
pub async fn get(stream: &stream::Stream, sequence: u64) -> anyhow::Result<Option<Stored>> {
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(Some(Stored::from_stream_message(message))),
        Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(anyhow!(
            "cannot read sequence {sequence} of stream {}: {e}",
            stream.cached_info().config.name
        )),
    }
}

/// Where a range read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    All,
    Sequence(u64),
    Time(DateTime<Utc>),
}

/// Messages of one stream matching a subject filter, in stream order, from a start up to a
/// last sequence fixed when the read begins — so what is published while reading (a replay's
/// own re-publishes included) is never read.
pub struct RangeReader {
    stream_name: String,
    messages: Option<consumer::pull::Ordered>,
    last: u64,
    expected: u64,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader")
            .field("stream", &self.stream_name)
            .field("last", &self.last)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    pub async fn open(
        stream: &stream::Stream,
        filter: &str,
        start: Start,
        last: u64,
    ) -> anyhow::Result<Self> {
        let stream_name = stream.cached_info().config.name.clone();
        let empty = Self {
            stream_name: stream_name.clone(),
            messages: None,
            last,
            expected: 0,
        };
        let deliver_policy = match start {
            Start::All => consumer::DeliverPolicy::All,
            Start::Sequence(from) if from > last => return Ok(empty),
            Start::Sequence(from) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            Start::Time(at) => consumer::DeliverPolicy::ByStartTime {
                start_time: to_nats_time(at)?,
            },
        };
        if last == 0 {
            return Ok(empty);
        }
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                description: Some("gcal-ops reader (ephemeral)".into()),
                filter_subject: filter.to_owned(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot read stream {stream_name} (filter {filter})"))?;
        let pending = reader.cached_info().num_pending;
        if pending == 0 {
            return Ok(empty);
        }
        let messages = reader
            .messages()
            .await
            .with_context(|| format!("cannot read stream {stream_name}"))?;
        Ok(Self {
            stream_name,
            messages: Some(messages),
            last,
            expected: pending,
        })
    }

    /// At most how many messages the read will return (for a progress bar).
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// The next message, or `None` once the range is exhausted.
    pub async fn next(&mut self) -> anyhow::Result<Option<Stored>> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let next = tokio::time::timeout(STALL_LIMIT, messages.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => {
                self.messages = None;
                return Err(anyhow!("reading stream {} failed: {e}", self.stream_name));
            }
            Ok(None) => {
                self.messages = None;
                return Ok(None);
            }
            Err(_) => {
                self.messages = None;
                return Err(anyhow!(
                    "reading stream {} stalled: no message for {STALL_LIMIT:?} although the server reported more",
                    self.stream_name
                ));
            }
        };
        let info = message
            .info()
            .map_err(|e| anyhow!("message without JetStream metadata: {e}"))?;
        let (sequence, pending, published) =
            (info.stream_sequence, info.pending, to_utc(&info.published));
        if sequence > self.last {
            self.messages = None;
            return Ok(None);
        }
        if pending == 0 || sequence == self.last {
            self.messages = None;
        }
        let message = message.message;
        Ok(Some(Stored {
            sequence,
            subject: message.subject.to_string(),
            headers: message.headers.unwrap_or_default(),
            payload: message.payload.to_vec(),
            stored_at: published,
        }))
    }

    /// Every remaining message, at most `limit` of those `keep` accepts.
    pub async fn collect(
        mut self,
        limit: Option<usize>,
        keep: impl Fn(&Stored) -> bool,
    ) -> anyhow::Result<Vec<Stored>> {
        let mut out = Vec::new();
        while limit.is_none_or(|limit| out.len() < limit) {
            match self.next().await? {
                Some(message) if keep(&message) => out.push(message),
                Some(_) => {}
                None => break,
            }
        }
        Ok(out)
    }
}

fn to_nats_time(at: DateTime<Utc>) -> anyhow::Result<async_nats::datetime::DateTime> {
    let nanos = at
        .timestamp_nanos_opt()
        .ok_or_else(|| anyhow!("{at} is out of range"))?;
    async_nats::datetime::from_nanos(i128::from(nanos)).map_err(|e| anyhow!("{at}: {e}"))
}
