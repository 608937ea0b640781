//! `dlq replay`: each dead letter's original payload back onto its original subject in the
//! domain stream (a new message id, the original id in `Gcal-Original-Msg-Id`), and — once
//! JetStream has acknowledged the replay — the dead letter deleted, so it is not replayed twice.
//! Bounded by `--deadline`: what is left then stays in the dead-letter stream for the next run.

use std::io::Write;

use async_nats::jetstream::stream::Stream;
use schemas::subjects::headers;

use crate::cli::DlqReplayArgs;
use crate::dead_letter::{Summary, summarize};
use crate::deadline::DeadlineReached;
use crate::output::{self, Action, Outcome};
use crate::reader::{self, Stored};

use super::{Ops, dead_letters, first_msg_id, no_dead_letter, republish};

pub async fn run(ops: &Ops, args: DlqReplayArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dlq_name = ops.ns.dead_letter_stream();
    let dlq = reader::open_stream(&ops.js, &dlq_name).await?;
    let events = reader::open_stream(&ops.js, &ops.ns.events_stream()).await?;
    // Each dead letter, or why it cannot be had.
    let letters: Vec<Result<Stored, Outcome>> = if args.all {
        let listed = ops
            .deadline
            .bound(dead_letters(
                ops,
                &dlq,
                args.consumer.as_ref(),
                args.subject.as_ref(),
                args.since,
                None,
            ))
            .await;
        let Some(listed) = listed else {
            return Err(DeadlineReached {
                budget: ops.deadline.budget(),
                done: 0,
                interrupted: 0,
                not_attempted: 0,
                resume: format!("; nothing was replayed: the dead letters of {dlq_name} could not be listed in time"),
            }
            .into());
        };
        listed?.into_iter().map(Ok).collect()
    } else {
        let mut letters = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for sequence in args.sequences.iter().copied().filter(|s| seen.insert(*s)) {
            letters.push(
                reader::get(&dlq, sequence)
                    .await?
                    .ok_or_else(|| Outcome::failed(sequence, no_dead_letter(sequence, ops))),
            );
        }
        letters
    };
    let bar = output::progress(
        letters.len() as u64,
        ops.progress_wanted() && letters.len() > 1,
        if args.dry_run {
            "checking"
        } else {
            "replaying"
        },
    );
    let total = letters.len();
    let mut outcomes = Vec::with_capacity(total);
    let mut interrupted = 0;
    for letter in letters {
        let outcome = match letter {
            Err(unknown) => unknown,
            Ok(letter) if ops.deadline.passed() => Outcome::not_attempted(letter.sequence),
            Ok(letter) => ops
                .deadline
                .bound(replay(ops, &dlq, &events, &letter, args.dry_run))
                .await
                .unwrap_or_else(|| {
                    interrupted += 1;
                    Outcome::interrupted(
                        letter.sequence,
                        "the deadline came while it was being replayed: it may have been \
                         replayed, and its dead letter is kept (replaying it again is harmless)",
                    )
                }),
        };
        outcomes.push(outcome);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let reported = output::report(out, ops.json, &dlq_name, &outcomes);
    let not_attempted = outcomes
        .iter()
        .filter(|o| o.result == Action::NotAttempted)
        .count();
    if interrupted + not_attempted == 0 {
        return reported;
    }
    Err(DeadlineReached {
        budget: ops.deadline.budget(),
        done: total - interrupted - not_attempted,
        interrupted,
        not_attempted: not_attempted as u64,
        resume: "; what is left is still in the dead-letter stream: run the command again".into(),
    }
    .into())
}

async fn replay(
    ops: &Ops,
    dlq: &Stream,
    events: &Stream,
    letter: &Stored,
    dry_run: bool,
) -> Outcome {
    let summary = summarize(letter);
    let Some(subject) = summary.subject.clone() else {
        return Outcome::failed(
            letter.sequence,
            format!(
                "it has no {} header, so where to replay it is unknown",
                headers::DEAD_LETTER_SUBJECT
            ),
        );
    };
    let mut outcome = Outcome {
        subject: Some(subject.clone()),
        ..Outcome::new(letter.sequence, Action::WouldReplay)
    };
    if !ops.events_subjects().matches(&subject) {
        return Outcome {
            error: Some(format!(
                "its original subject is not one of {} (the subjects of {})",
                ops.ns.events_stream_subjects().join(", "),
                ops.ns.events_stream()
            )),
            result: Action::Failed,
            ..outcome
        };
    }
    outcome.original_msg_id = original_msg_id(letter, &summary, events).await;
    if dry_run {
        return outcome;
    }
    let replayed = match republish(
        &ops.js,
        &subject,
        &letter.headers,
        &letter.payload,
        outcome.original_msg_id.as_deref(),
    )
    .await
    {
        Ok(replayed) => replayed,
        Err(error) => {
            return Outcome {
                result: Action::Failed,
                error: Some(error),
                ..outcome
            };
        }
    };
    outcome.new_sequence = Some(replayed.sequence);
    outcome.new_msg_id = Some(replayed.msg_id);
    let deleted = match dlq.delete_message(letter.sequence).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server did not delete it".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    match deleted {
        Ok(()) => Outcome {
            result: Action::Replayed,
            ..outcome
        },
        Err(why) => Outcome {
            result: Action::Failed,
            error: Some(format!(
                "replayed as sequence {} of {}, but the dead letter could not be deleted ({why}): \
                 delete it with `gcal-ops dlq purge {}` so it is not replayed again",
                replayed.sequence,
                ops.ns.events_stream(),
                letter.sequence
            )),
            ..outcome
        },
    }
}

/// The id the event was first published with. Parking replaces a message's `Nats-Msg-Id`
/// (the dead letter's own is `<consumer>-<sequence>`), so it comes from, in order: the dead
/// letter's `Gcal-Original-Msg-Id` (it was a replay already), the original in the domain
/// stream if it is still there, the envelope's `id` (the services publish it as the message id).
async fn original_msg_id(letter: &Stored, summary: &Summary, events: &Stream) -> Option<String> {
    if let Some(id) = letter.header(headers::ORIGINAL_MSG_ID) {
        return Some(id.to_owned());
    }
    if let (Some(sequence), Some(subject)) = (summary.original_sequence, &summary.subject)
        && let Ok(Some(original)) = reader::get(events, sequence).await
        && original.subject == *subject
        && let Some(id) = first_msg_id(&original)
    {
        return Some(id);
    }
    summary.event_id.clone()
}
