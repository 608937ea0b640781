//! How results reach the operator: aligned tables for people, one JSON document for machines,
//! a per-message report for commands that act on messages, and a progress bar on a terminal.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::dead_letter::Summary;

/// Writes `value` as one pretty-printed JSON document.
pub fn json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A text table: left-aligned columns two spaces apart, header in capitals.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>, out: &mut dyn Write| -> std::io::Result<()> {
            let last = cells.len().saturating_sub(1);
            let mut text = String::new();
            for (i, cell) in cells.into_iter().enumerate() {
                text.push_str(cell);
                if i < last {
                    let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(self.header.clone(), out)?;
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect(), out)?;
        }
        Ok(())
    }
}

/// `text` cut to `max` characters, with an ellipsis when it was longer.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// `2025-06-01T12:00:00.123+00:00` → `2025-06-01 12:00:00Z`; anything else as it is.
pub fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|at| {
            at.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// A bar on stderr while bulk work runs, only for a person at a terminal: hidden when stderr
/// is not a terminal and in `--json` mode.
pub fn progress(len: u64, wanted: bool, what: &str) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Replayed,
    WouldReplay,
    Deleted,
    WouldDelete,
    Failed,
    /// In progress when the deadline came: it may or may not have been done.
    Interrupted,
    /// Left alone: the deadline came first.
    NotAttempted,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::Replayed => "replayed",
            Action::WouldReplay => "would replay",
            Action::Deleted => "deleted",
            Action::WouldDelete => "would delete",
            Action::Failed => "failed",
            Action::Interrupted => "interrupted",
            Action::NotAttempted => "not attempted",
        }
    }
}

/// One line of a replay or purge report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The message acted on: its sequence in the stream it was read from.
    pub sequence: u64,
    pub result: Action,
    /// The subject it was (or would be) published on.
    pub subject: Option<String>,
    /// Where the replay was stored in the domain stream, and under which new message id.
    pub new_sequence: Option<u64>,
    pub new_msg_id: Option<String>,
    /// The id the event was first published with (`Gcal-Original-Msg-Id` on the replay).
    pub original_msg_id: Option<String>,
    /// Why it failed, or what went wrong after it was replayed.
    pub error: Option<String>,
    /// For purges: the dead letter that was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Summary>,
}

impl Outcome {
    pub fn new(sequence: u64, result: Action) -> Self {
        Self {
            sequence,
            result,
            subject: None,
            new_sequence: None,
            new_msg_id: None,
            original_msg_id: None,
            error: None,
            dead_letter: None,
        }
    }

    pub fn failed(sequence: u64, error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::new(sequence, Action::Failed)
        }
    }

    /// In progress when the deadline came.
    pub fn interrupted(sequence: u64, why: impl Into<String>) -> Self {
        Self {
            error: Some(why.into()),
            ..Self::new(sequence, Action::Interrupted)
        }
    }

    /// Left alone because the deadline came first.
    pub fn not_attempted(sequence: u64) -> Self {
        Self {
            error: Some("not attempted: the deadline came first".into()),
            ..Self::new(sequence, Action::NotAttempted)
        }
    }
}

/// Why a command that acts on several messages exits 1: the report says which and why.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} messages failed: {first}")]
pub struct SomeFailed {
    pub failed: usize,
    pub total: usize,
    /// The first failure, `sequence N: why`.
    pub first: String,
}

/// Prints the report (a table, or the JSON array) and fails when any message failed.
pub fn report(
    out: &mut dyn Write,
    json_mode: bool,
    stream: &str,
    outcomes: &[Outcome],
) -> anyhow::Result<()> {
    if json_mode {
        json(out, outcomes)?;
    } else if outcomes.is_empty() {
        writeln!(out, "no messages matched in {stream}")?;
    } else {
        let mut table = Table::new(&["SEQ", "SUBJECT", "RESULT", "DETAIL"]);
        for o in outcomes {
            let detail = match o.result {
                Action::Replayed | Action::WouldReplay => {
                    let mut parts = Vec::new();
                    if let Some(seq) = o.new_sequence {
                        parts.push(format!("new seq {seq}"));
                    }
                    if let Some(id) = &o.new_msg_id {
                        parts.push(format!("msg id {id}"));
                    }
                    parts.push(format!(
                        "original id {}",
                        o.original_msg_id.as_deref().unwrap_or("unknown")
                    ));
                    if let Some(e) = &o.error {
                        parts.push(e.clone());
                    }
                    parts.join(", ")
                }
                Action::Deleted | Action::WouldDelete => o
                    .dead_letter
                    .as_ref()
                    .and_then(|d| d.consumer.clone())
                    .map(|c| format!("parked by {c}"))
                    .unwrap_or_default(),
                Action::Failed | Action::Interrupted | Action::NotAttempted => {
                    o.error.clone().unwrap_or_default()
                }
            };
            table.row(vec![
                o.sequence.to_string(),
                or_dash(o.subject.as_deref()),
                o.result.label().to_owned(),
                detail,
            ]);
        }
        table.write(out)?;
        let mut counts: Vec<(Action, usize)> = Vec::new();
        for o in outcomes {
            match counts.iter_mut().find(|(a, _)| *a == o.result) {
                Some((_, n)) => *n += 1,
                None => counts.push((o.result, 1)),
            }
        }
        let summary: Vec<String> = counts
            .iter()
            .map(|(a, n)| format!("{n} {}", a.label()))
            .collect();
        writeln!(out, "{}", summary.join(", "))?;
    }
    let failures: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.result == Action::Failed)
        .collect();
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(SomeFailed {
            failed: failures.len(),
            total: outcomes.len(),
            first: format!(
                "sequence {}: {}",
                first.sequence,
                first.error.as_deref().unwrap_or("failed")
            ),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut t = Table::new(&["SEQ", "NAME", "NOTE"]);
        t.row(vec!["1".into(), "a-long-name".into(), String::new()]);
        t.row(vec!["123".into(), "b".into(), "x".into()]);
        let mut out = Vec::new();
        t.write(&mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "SEQ  NAME         NOTE\n1    a-long-name\n123  b            x\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("0123456789abc", 10), "012345678…");
        assert_eq!(
            short_time("2025-06-01T14:00:00.5+02:00"),
            "2025-06-01 12:00:00Z"
        );
        assert_eq!(short_time("garbage"), "garbage");
    }

    #[test]
    fn a_failed_message_fails_the_report_after_printing_it() {
        let outcomes = vec![
            Outcome::new(3, Action::WouldReplay),
            Outcome::failed(42, "no dead letter with sequence 42 in X_DEAD_LETTERS"),
        ];
        let mut out = Vec::new();
        let err = report(&mut out, false, "X_DEAD_LETTERS", &outcomes).expect_err("one failed");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("would replay") && text.contains("1 failed"),
            "{text}"
        );
        assert!(
            err.to_string().contains("sequence 42: no dead letter"),
            "{err}"
        );
        assert!(report(&mut Vec::new(), true, "X", &outcomes[..1]).is_ok());
    }
}
