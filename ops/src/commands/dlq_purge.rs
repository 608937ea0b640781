//! `dlq purge`: delete dead letters without replaying them, after printing what goes.

use std::io::Write;

use anyhow::Context as _;

use crate::cli::DlqPurgeArgs;
use crate::dead_letter::{Summary, summarize};
use crate::output::{self, Action, Outcome};
use crate::reader;

use super::{Ops, dead_letters, dlq_list, no_dead_letter};

pub async fn run(ops: &Ops, args: DlqPurgeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dlq_name = ops.ns.dead_letter_stream();
    let dlq = reader::open_stream(&ops.js, &dlq_name).await?;
    let mut found: Vec<Summary> = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    if args.all {
        let letters = dead_letters(ops, &dlq, args.consumer.as_ref(), None, None, None).await?;
        found.extend(letters.iter().map(summarize));
    } else {
        let mut seen = std::collections::HashSet::new();
        for sequence in args.sequences.iter().copied().filter(|s| seen.insert(*s)) {
            match reader::get(&dlq, sequence).await? {
                Some(letter) => found.push(summarize(&letter)),
                None => outcomes.push(Outcome::failed(sequence, no_dead_letter(sequence, ops))),
            }
        }
    }
    if !ops.json && !found.is_empty() {
        writeln!(
            out,
            "{} {} dead letter{} from {dlq_name}:",
            if args.dry_run {
                "would delete"
            } else {
                "deleting"
            },
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        )?;
        dlq_list::write_table(out, &found)?;
        writeln!(out)?;
    }
    let result = if args.dry_run {
        Action::WouldDelete
    } else {
        Action::Deleted
    };
    let deleted = |summary: &Summary, result: Action| Outcome {
        subject: summary.subject.clone(),
        dead_letter: Some(summary.clone()),
        ..Outcome::new(summary.sequence, result)
    };
    if args.dry_run {
        outcomes.extend(found.iter().map(|s| deleted(s, result)));
    } else if args.all {
        if let Some(last) = found.iter().map(|s| s.sequence).max() {
            // One request; bounded by the last sequence listed, so a dead letter parked after
            // the listing (and so not printed) stays.
            let filter = match &args.consumer {
                Some(c) => ops.ns.dead_letter(c.as_str()),
                None => ops.ns.dead_letter_stream_subjects().join(","),
            };
            dlq.purge()
                .filter(filter)
                .sequence(last + 1)
                .await
                .with_context(|| format!("cannot purge {dlq_name}"))?;
            outcomes.extend(found.iter().map(|s| deleted(s, result)));
        }
    } else {
        for summary in &found {
            outcomes.push(match dlq.delete_message(summary.sequence).await {
                Ok(true) => deleted(summary, result),
                Ok(false) => Outcome {
                    dead_letter: Some(summary.clone()),
                    ..Outcome::failed(summary.sequence, "the server did not delete it")
                },
                Err(e) => Outcome {
                    dead_letter: Some(summary.clone()),
                    ..Outcome::failed(summary.sequence, format!("cannot delete it: {e}"))
                },
            });
        }
    }
    outcomes.sort_by_key(|o| o.sequence);
    output::report(out, ops.json, &dlq_name, &outcomes)
}
