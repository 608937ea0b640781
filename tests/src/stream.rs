//! Reading what a JetStream stream holds, as tests check what was published or dead-lettered.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

/// The most messages one read returns.
const MAX_MESSAGES: usize = 100;

/// The messages now in `stream` (the first 100), or only those on subjects matching `filter`,
/// read with an ephemeral consumer without waiting for more; `None` when the stream does not
/// exist.
pub async fn messages(
    js: &jetstream::Context,
    stream: &str,
    filter: Option<String>,
) -> Option<Vec<jetstream::Message>> {
    let stream = js.get_stream(stream).await.ok()?;
    let reader = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: filter.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .expect("ephemeral reader");
    let mut batch = reader
        .fetch()
        .max_messages(MAX_MESSAGES)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("fetch");
    let mut out = Vec::new();
    while let Some(Ok(message)) = batch.next().await {
        out.push(message);
    }
    Some(out)
}

/// The value of the header `name` of `message`, empty when it has none.
pub fn header(message: &jetstream::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}
