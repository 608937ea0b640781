//! `events replay`: re-publish stored domain events matching a subject filter in a range, each
//! with a new message id and the original id in `Gcal-Original-Msg-Id`, in stream order.
//! Bounded by `--deadline`: the report then says from which sequence to resume.

use std::io::Write;

use crate::cli::EventsReplayArgs;
use crate::deadline::DeadlineReached;
use crate::output::{self, Action, Outcome};
use crate::reader::{self, RangeReader, Start, Stored};

use super::{Ops, first_msg_id, republish};

pub async fn run(ops: &Ops, args: EventsReplayArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let stream_name = ops.ns.events_stream();
    let events = reader::open_stream(&ops.js, &stream_name).await?;
    // Fixed before the first re-publish: the replay never reads what it publishes itself.
    let stored_last = reader::last_sequence(&events).await?;
    let last = args.to_seq.map_or(stored_last, |to| to.min(stored_last));
    let start = match (args.from_seq, args.since) {
        (Some(from), _) => Start::Sequence(from),
        (None, Some(since)) => Start::Time(since),
        (None, None) => Start::All,
    };
    let mut range = RangeReader::open(&events, args.subject.as_str(), start, last).await?;
    let bar = output::progress(
        range.expected(),
        ops.progress_wanted(),
        if args.dry_run {
            "checking"
        } else {
            "replaying"
        },
    );
    let mut outcomes = Vec::new();
    // The first sequence not (or not surely) replayed, when the deadline stops the replay.
    let mut stopped_at: Option<u64> = None;
    let read_error = loop {
        let Some(next) = ops.deadline.bound(range.next()).await else {
            let after = outcomes.last().map_or(0, |o: &Outcome| o.sequence);
            stopped_at = Some(match (after, args.from_seq) {
                (0, Some(from)) => from,
                (0, None) => 0,
                (after, _) => after + 1,
            });
            break None;
        };
        match next {
            Ok(Some(event)) => {
                let sequence = event.sequence;
                match ops.deadline.bound(replay(ops, &event, args.dry_run)).await {
                    Some(outcome) => outcomes.push(outcome),
                    None => {
                        outcomes.push(Outcome::interrupted(
                            sequence,
                            "the deadline came while it was being replayed: it may have been \
                             replayed (replaying it again is harmless)",
                        ));
                        stopped_at = Some(sequence);
                        break None;
                    }
                }
                bar.inc(1);
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    bar.finish_and_clear();
    let reported = output::report(out, ops.json, &stream_name, &outcomes);
    if let Some(resume_from) = stopped_at {
        let interrupted = outcomes
            .iter()
            .filter(|o| o.result == Action::Interrupted)
            .count();
        let resume = if resume_from == 0 {
            "; nothing was read: run it again".to_owned()
        } else {
            format!("; resume with --from-seq {resume_from} --to-seq {last}")
        };
        return Err(DeadlineReached {
            budget: ops.deadline.budget(),
            done: outcomes.len() - interrupted,
            interrupted,
            not_attempted: range.expected().saturating_sub(outcomes.len() as u64),
            resume,
        }
        .into());
    }
    match read_error {
        Some(e) => Err(e.context(format!(
            "stopped after {} events; the report above lists what was done",
            outcomes.len()
        ))),
        None => reported,
    }
}

async fn replay(ops: &Ops, event: &Stored, dry_run: bool) -> Outcome {
    let outcome = Outcome {
        subject: Some(event.subject.clone()),
        original_msg_id: first_msg_id(event),
        ..Outcome::new(event.sequence, Action::WouldReplay)
    };
    if dry_run {
        return outcome;
    }
    match republish(
        &ops.js,
        &event.subject,
        &event.headers,
        &event.payload,
        outcome.original_msg_id.as_deref(),
    )
    .await
    {
        Ok(replayed) => Outcome {
            result: Action::Replayed,
            new_sequence: Some(replayed.sequence),
            new_msg_id: Some(replayed.msg_id),
            ..outcome
        },
        Err(error) => Outcome {
            result: Action::Failed,
            error: Some(error),
            ..outcome
        },
    }
}
