//! `dlq list`: the dead letters, oldest first, one line each.

use std::io::Write;

use crate::cli::DlqListArgs;
use crate::dead_letter::{Summary, summarize};
use crate::output::{self, Table, or_dash, short_time, truncate};
use crate::reader;

use super::{Ops, dead_letters};

/// Longest last error shown in the table (`--json` and `dlq show` give it whole).
const ERROR_WIDTH: usize = 60;

pub async fn run(ops: &Ops, args: DlqListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let stream_name = ops.ns.dead_letter_stream();
    let dlq = reader::open_stream(&ops.js, &stream_name).await?;
    let letters = dead_letters(
        ops,
        &dlq,
        args.consumer.as_ref(),
        args.subject.as_ref(),
        args.since,
        args.limit,
    )
    .await?;
    let summaries: Vec<Summary> = letters.iter().map(summarize).collect();
    if ops.json {
        return output::json(out, &summaries);
    }
    if summaries.is_empty() {
        let filtered = args.consumer.is_some() || args.subject.is_some() || args.since.is_some();
        writeln!(
            out,
            "no dead letters in {stream_name}{}",
            if filtered { " match the filters" } else { "" }
        )?;
        return Ok(());
    }
    write_table(out, &summaries)?;
    Ok(())
}

/// The table `dlq list` prints (and `dlq purge` before it deletes).
pub fn write_table(out: &mut dyn Write, summaries: &[Summary]) -> std::io::Result<()> {
    let mut table = Table::new(&[
        "SEQ",
        "PARKED AT",
        "CONSUMER",
        "SUBJECT",
        "DELIVERIES",
        "EVENT TYPE",
        "EVENT ID",
        "LAST ERROR",
    ]);
    for s in summaries {
        table.row(vec![
            s.sequence.to_string(),
            short_time(&s.parked_at),
            or_dash(s.consumer.as_deref()),
            or_dash(s.subject.as_deref()),
            s.deliveries.map_or_else(|| "-".into(), |d| d.to_string()),
            or_dash(s.event_type.as_deref()),
            or_dash(s.event_id.as_deref()),
            truncate(s.last_error.as_deref().unwrap_or("-"), ERROR_WIDTH),
        ]);
    }
    table.write(out)
}
