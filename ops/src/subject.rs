//! NATS subject filters and consumer names as the command line takes them.

use std::fmt;
use std::str::FromStr;

/// A NATS subject filter: dot-separated tokens, where a `*` token matches any one token and a
/// final `>` matches one or more. Checked when parsed, so matching cannot meet a malformed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFilter(String);

impl SubjectFilter {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `subject` (a concrete subject, no wildcards) matches this filter.
    pub fn matches(&self, subject: &str) -> bool {
        let mut subject_tokens = subject.split('.');
        for token in self.0.split('.') {
            match (token, subject_tokens.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (literal, Some(actual)) if literal == actual => {}
                _ => return false,
            }
        }
        subject_tokens.next().is_none()
    }

    /// Whether every subject this filter matches starts with the literal tokens `prefix`
    /// (so, e.g., it selects only within one stream's subjects).
    pub fn is_within(&self, prefix: &[&str]) -> bool {
        let tokens: Vec<&str> = self.0.split('.').collect();
        tokens.len() > prefix.len() && tokens.iter().zip(prefix).all(|(t, p)| t == p)
    }
}

impl FromStr for SubjectFilter {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let tokens: Vec<&str> = raw.split('.').collect();
        if raw.is_empty() || tokens.iter().any(|t| t.is_empty()) {
            return Err(format!(
                "{raw:?} is not a NATS subject filter: tokens separated by single dots, e.g. gcal.events.connection.*.*"
            ));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{raw:?}: a subject may not contain white space"));
        }
        if let Some(i) = tokens.iter().position(|t| *t == ">")
            && i + 1 != tokens.len()
        {
            return Err(format!("{raw:?}: '>' may only be the last token"));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl fmt::Display for SubjectFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A durable consumer's name as it appears in the dead-letter subject
/// (`<prefix>.dead-letter.<consumer>`): one subject token, no wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerName(String);

impl ConsumerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConsumerName {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let ok = !raw.is_empty()
            && raw
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a consumer name such as mailer-worker (no '.', '*', '>' or spaces)"
            ))
        }
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(raw: &str) -> SubjectFilter {
        raw.parse().expect("valid filter")
    }

    #[test]
    fn wildcards_match_as_nats_matches_them() {
        let s = "gcal.events.connection.succeeded.68cf05f060d294db17c0685e";
        assert!(filter("gcal.events.>").matches(s));
        assert!(filter("gcal.events.connection.*.*").matches(s));
        assert!(filter("*.events.connection.succeeded.*").matches(s));
        assert!(filter(s).matches(s));
        assert!(!filter("gcal.events.connection.*").matches(s), "too short");
        assert!(
            !filter("gcal.events.connection.*.*.*").matches(s),
            "too long"
        );
        assert!(!filter("gcal.events.auth-link.>").matches(s));
        assert!(
            !filter("gcal.events.connection.succeeded.>")
                .matches("gcal.events.connection.succeeded"),
            "'>' needs at least one token"
        );
        assert!(
            !filter("gcal.events.conn*.>").matches(s),
            "partial wildcards are literal"
        );
    }

    #[test]
    fn malformed_filters_and_names_are_refused() {
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a b"] {
            assert!(bad.parse::<SubjectFilter>().is_err(), "{bad:?}");
        }
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(bad.parse::<ConsumerName>().is_err(), "{bad:?}");
        }
        assert!("mailer-worker".parse::<ConsumerName>().is_ok());
    }

    #[test]
    fn within_means_every_match_starts_with_the_prefix() {
        assert!(filter("gcal.events.>").is_within(&["gcal", "events"]));
        assert!(filter("gcal.events.connection.*.*").is_within(&["gcal", "events"]));
        assert!(!filter("gcal.>").is_within(&["gcal", "events"]));
        assert!(!filter("*.events.>").is_within(&["gcal", "events"]));
        assert!(!filter("gcal.events").is_within(&["gcal", "events"]));
        assert!(!filter("other.events.>").is_within(&["gcal", "events"]));
    }
}
