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
    #[error("{value:?} is not a valid email address: {reason}")]
    UserEmail { value: String, reason: String },
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
/// Syntax is checked by the `email_address` crate (RFC 5321/5322 rules), never by a home-made
/// regex; on top of that only addresses the mailer can deliver over plain SMTP are accepted, so
/// an answer of `emailSent: true` is never a promise the mailer cannot keep:
///
/// - the local part (before `@`) is an unquoted ASCII dot-atom: no `"..."@`, no non-ASCII
///   characters (SMTPUTF8 is not used);
/// - the domain is a name, not a literal (`[10.0.0.5]`), with at least one dot, and a valid
///   IDNA name: `bücher.example` is accepted and mailed to its A-label form
///   `xn--bcher-kva.example` ([`UserEmail::smtp_address`]).
///
/// The address is kept as given (trimmed), so answers and stored documents echo what the
/// caller sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("format" = "email"))]
pub struct UserEmail(
    String,
    /// The same address with its domain in ASCII (IDNA A-labels), as SMTP sends it.
    String,
);

impl UserEmail {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let trimmed = raw.trim();
        let refuse = |reason: &str| IdError::UserEmail {
            value: truncate_for_message(raw),
            reason: reason.to_owned(),
        };
        // `email_address` accepts display-name forms ("A <a@b>"); we want the bare address.
        let parsed = email_address::EmailAddress::parse_with_options(
            trimmed,
            email_address::Options::default().without_display_text(),
        )
        .map_err(|e| {
            refuse(&format!(
                "it must be a bare address like name@example.com ({e})"
            ))
        })?;
        let local = parsed.local_part();
        let domain = parsed.domain();
        if local.starts_with('"') {
            return Err(refuse(
                "a quoted local part (\"...\"@) cannot be delivered; use an address without quotes",
            ));
        }
        if !local.is_ascii() {
            return Err(refuse(
                "the part before @ must be ASCII (internationalized local parts cannot be delivered)",
            ));
        }
        if domain.starts_with('[') {
            return Err(refuse(
                "a domain literal ([...]) cannot be delivered; use a domain name",
            ));
        }
        if !domain.contains('.') {
            return Err(refuse("the domain must be a full name like example.com"));
        }
        let ascii_domain = idna::domain_to_ascii_strict(domain)
            .ok()
            .filter(|ascii| email_address::EmailAddress::is_valid_domain(ascii))
            .ok_or_else(|| refuse("the domain is not a valid (internationalized) domain name"))?;
        // No top-level domain is numeric: `a@10.0.0.5` is an IP address without its brackets.
        let top_level = ascii_domain.rsplit('.').next().unwrap_or_default();
        if top_level.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                "the domain must be a domain name, not an IP address",
            ));
        }
        let smtp = format!("{local}@{ascii_domain}");
        Ok(Self(parsed.email().to_owned(), smtp))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address as the mailer hands it to SMTP (`RCPT TO`, `To:`): the local part as given
    /// (ASCII by construction) and the domain in ASCII, IDNA A-labels for an internationalized
    /// name (`user@xn--bcher-kva.example` for `user@bücher.example`).
    pub fn smtp_address(&self) -> &str {
        &self.1
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

/// How a Google account's email is written wherever it is a key: the stored tokens, the
/// calendar entries, `metadata.connections` and every lookup of them (disconnect, access
/// tokens). Google treats the address case-insensitively, so one account must have one key
/// whichever way a caller spelled it; the callback, the deprecated metadata endpoint, the
/// disconnect routes and the workers all go through this one function.
pub fn google_account_key(email: &str) -> String {
    email.trim().to_lowercase()
}

impl UserEmail {
    /// This address as a Google account's key ([`google_account_key`]).
    pub fn google_account_key(&self) -> String {
        google_account_key(&self.0)
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
    fn a_google_account_has_one_key_however_it_is_spelled() {
        assert_eq!(
            google_account_key(" GoogleUser@Gmail.com "),
            "googleuser@gmail.com"
        );
        let parsed = UserEmail::parse("GoogleUser@Gmail.com ").expect("valid");
        assert_eq!(parsed.google_account_key(), "googleuser@gmail.com");
    }

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
    fn user_email_refuses_what_smtp_cannot_deliver() {
        for (bad, why) in [
            (r#""<script>"@example.com"#, "quoted"),
            (r#""john doe"@example.com"#, "quoted"),
            ("jöhn@example.com", "ASCII"),
            ("用户@例子.广告", "ASCII"),
            ("a@[10.0.0.5]", "domain literal"),
            ("a@[IPv6:2001:db8::1]", "domain literal"),
            ("a@ex_ample.com", "domain name"),
            ("a@exa+mple.com", "domain name"),
            ("a@-example.com", "bare address"),
            ("a@ab--cd.example", "domain name"),
            ("a@10.0.0.5", "domain name"),
        ] {
            match UserEmail::parse(bad) {
                Err(IdError::UserEmail { reason, .. }) => {
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn internationalized_domains_are_sent_in_their_ascii_form() {
        let email = UserEmail::parse("user@bücher.example").expect("IDN domain");
        assert_eq!(email.as_str(), "user@bücher.example");
        assert_eq!(email.smtp_address(), "user@xn--bcher-kva.example");
        let email = UserEmail::parse("User.Name+tag@Example.COM").expect("ascii");
        assert_eq!(email.as_str(), "User.Name+tag@Example.COM");
        assert_eq!(email.smtp_address(), "User.Name+tag@example.com");
        let email = UserEmail::parse("a@xn--bcher-kva.example").expect("A-label");
        assert_eq!(email.smtp_address(), "a@xn--bcher-kva.example");
    }

    #[test]
    fn the_smtp_address_is_always_ascii() {
        // Every printable ASCII character inside a local part, and a few Unicode domains.
        let mut candidates: Vec<String> = (0x20u8..0x7f)
            .map(|c| format!("a{}b@example.com", char::from(c)))
            .collect();
        for domain in [
            "bücher.example",
            "ÄÖÜ.example",
            "例子.广告",
            "ｅｘａｍｐｌｅ.com",
        ] {
            candidates.push(format!("user@{domain}"));
        }
        let mut accepted = 0;
        for candidate in &candidates {
            if let Ok(email) = UserEmail::parse(candidate) {
                accepted += 1;
                assert!(email.smtp_address().is_ascii(), "{candidate:?}");
                let (local, domain) = email.smtp_address().rsplit_once('@').expect("@");
                assert!(email.as_str().starts_with(local), "{candidate:?}");
                assert!(email_address::EmailAddress::is_valid_domain(domain));
            }
        }
        assert!(accepted > 20, "only {accepted} accepted");
    }

    #[test]
    fn long_rejected_values_are_truncated_in_messages() {
        let err = SubaccountId::parse(&"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
    }
}
