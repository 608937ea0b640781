//! `dlq show`: everything one dead letter holds.

use std::io::Write;

use anyhow::anyhow;

use crate::cli::DlqShowArgs;
use crate::dead_letter::detail;
use crate::output::{self, or_dash};
use crate::reader;

use super::{Ops, no_dead_letter};

pub async fn run(ops: &Ops, args: DlqShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let stream_name = ops.ns.dead_letter_stream();
    let dlq = reader::open_stream(&ops.js, &stream_name).await?;
    let letter = reader::get(&dlq, args.sequence)
        .await?
        .ok_or_else(|| anyhow!(no_dead_letter(args.sequence, ops)))?;
    let d = detail(&letter, &stream_name);
    if ops.json {
        return output::json(out, &d);
    }
    let s = &d.summary;
    writeln!(out, "dead letter {} in {}", s.sequence, d.stream)?;
    let mut field = |name: &str, value: String| writeln!(out, "  {name:<16}{value}");
    field("stored under", d.dead_letter_subject.clone())?;
    field("stored at", d.stored_at.clone())?;
    field("consumer", or_dash(s.consumer.as_deref()))?;
    field(
        "original",
        match (&s.subject, s.original_sequence) {
            (Some(subject), Some(seq)) => {
                format!("{subject} (sequence {seq} of {})", ops.ns.events_stream())
            }
            (subject, _) => or_dash(subject.as_deref()),
        },
    )?;
    field("published at", or_dash(s.published_at.as_deref()))?;
    field("parked at", s.parked_at.clone())?;
    field(
        "deliveries",
        s.deliveries.map_or_else(|| "-".into(), |d| d.to_string()),
    )?;
    field("event type", or_dash(s.event_type.as_deref()))?;
    field("event id", or_dash(s.event_id.as_deref()))?;
    field("correlation id", or_dash(s.correlation_id.as_deref()))?;
    field("first error", or_dash(s.first_error.as_deref()))?;
    field("last error", or_dash(s.last_error.as_deref()))?;
    writeln!(out, "headers:")?;
    for (name, values) in &d.headers {
        for value in values {
            writeln!(out, "  {name}: {value}")?;
        }
    }
    match (&d.payload, &d.payload_text) {
        (Some(json), _) => writeln!(out, "payload:\n{}", serde_json::to_string_pretty(json)?)?,
        (None, Some(text)) => writeln!(out, "payload (not JSON):\n{text}")?,
        (None, None) => writeln!(out, "payload: (empty)")?,
    }
    Ok(())
}
