//! Identifiers that cross service boundaries. Each is parsed once, at the edge; holding one
//! means it is valid, so handlers never check it again.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier. The message names the rule that was broken, so it
/// can be shown to whoever sent the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("subaccountId must be 24 hexadecimal characters (a MongoDB ObjectId), got {0:?}")]
    SubaccountId(String),
    #[error("connectorId must be 1-64 characters of a-z, 0-9 and '-', got {0:?}")]
    ConnectorId(String),
    #[error("{0:?} is not a valid email address")]
    UserEmail(String),
    #[error(
        "a display name must be 1 to {max} characters without control or bidirectional-override characters, got {0:?}",
        max = DisplayName::MAX_CHARS
    )]
    DisplayName(String),
}

/// The tenant: a subaccount of the SaaS platform, identified by a 24-hex ObjectId string as in
/// the reference spec (`68cf05f060d294db17c0685e`). Stored lower-case so the same tenant always
/// maps to the same database.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("pattern" = r"^[0-9a-fA-F]{24}$"))]
pub struct SubaccountId(String);

impl SubaccountId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(IdError::SubaccountId(truncate_for_message(raw)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which connector of a subaccount a document describes (`google-calendar`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("pattern" = r"^[a-z0-9-]{1,64}$"))]
pub struct ConnectorId(String);

impl ConnectorId {
    /// The connector this product manages. The reference spec assumes this exact id.
    pub fn google_calendar() -> Self {
        Self(crate::documents::connector_subaccount::GOOGLE_CALENDAR_CONNECTOR_ID.to_owned())
    }

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::ConnectorId(truncate_for_message(raw)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The platform user's email address: who asked for the connection and receives the link.
/// Validated by the `email_address` crate (RFC 5321/5322 rules), never by a home-made regex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("format" = "email"))]
pub struct UserEmail(String);

impl UserEmail {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let trimmed = raw.trim();
        // `email_address` accepts display-name forms ("A <a@b>"); we want the bare address.
        match email_address::EmailAddress::parse_with_options(
            trimmed,
            email_address::Options::default().without_display_text(),
        ) {
            Ok(parsed) if parsed.domain().contains('.') => Ok(Self(parsed.email().to_owned())),
            _ => Err(IdError::UserEmail(truncate_for_message(raw))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name shown to a person in an email or a page: who asks for their calendar (a tenant's
/// display name, the product's name). Plain text of at most [`DisplayName::MAX_CHARS`]
/// characters, trimmed, with no control characters (no header or line injection) and no
/// invisible or bidirectional-override characters (no name that reads differently from what
/// it is). Still text from a caller: every page and email HTML-escapes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("minLength" = 1, "maxLength" = 100))]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let trimmed = raw.trim();
        let count = trimmed.chars().count();
        let hidden = |c: char| {
            c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
        };
        if (1..=Self::MAX_CHARS).contains(&count) && !trimmed.chars().any(hidden) {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(IdError::DisplayName(truncate_for_message(raw)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($ty:ident),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }
        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = IdError;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}
string_newtype_impls!(SubaccountId, ConnectorId, UserEmail, DisplayName);

/// Rejected input is echoed in error messages; cap it so a hostile value cannot flood a log.
fn truncate_for_message(raw: &str) -> String {
    const MAX: usize = 64;
    match raw.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subaccount_id_accepts_object_ids_and_normalises_case() {
        let id = SubaccountId::parse("68CF05F060D294DB17C0685E").expect("valid");
        assert_eq!(id.as_str(), "68cf05f060d294db17c0685e");
    }

    #[test]
    fn subaccount_id_rejects_everything_else() {
        for bad in [
            "",
            "68cf05f060d294db17c0685",
            "68cf05f060d294db17c0685eX",
            "zzcf05f060d294db17c0685e",
            "../../etc/passwd0000000",
        ] {
            assert!(SubaccountId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn connector_id_rules() {
        assert!(ConnectorId::parse("google-calendar").is_ok());
        assert!(ConnectorId::parse("Google").is_err());
        assert!(ConnectorId::parse("").is_err());
        assert!(ConnectorId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn user_email_uses_a_real_parser() {
        assert_eq!(
            UserEmail::parse(" user@example.com ")
                .expect("valid")
                .as_str(),
            "user@example.com"
        );
        for bad in [
            "user",
            "user@",
            "@example.com",
            "a b@example.com",
            "User <user@example.com>",
            "user@localhost",
        ] {
            assert!(UserEmail::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn display_names_are_short_visible_text() {
        assert_eq!(
            DisplayName::parse("  Acme <Sales> & Co ")
                .expect("valid")
                .as_str(),
            "Acme <Sales> & Co"
        );
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        for bad in [
            String::new(),
            "   ".to_owned(),
            "a".repeat(101),
            "Acme\r\nBcc: x@example.com".to_owned(),
            "Acme\u{202E}moc.elgoog".to_owned(),
            "Ac\u{200B}me".to_owned(),
        ] {
            assert!(DisplayName::parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn long_rejected_values_are_truncated_in_messages() {
        let err = SubaccountId::parse(&"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
    }
}
