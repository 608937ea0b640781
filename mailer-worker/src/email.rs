//! The authorization email: a plain-text and an HTML part carrying the link and until when it
//! works. Pure: no I/O, so its wording and escaping are tested without an SMTP server.

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use schemas::Envelope;
use schemas::events::AuthLinkIssued;

pub const SUBJECT: &str = "Connect your Google Calendar";

/// Why an event cannot become an email. Redelivering the same event gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Only http(s) links are put in an email (an HTML `href` would run `javascript:`).
    #[error("authUrl is not an http(s) URL")]
    UnsafeLink,
    #[error("recipient is not a usable mailbox: {0}")]
    Recipient(String),
    #[error("the message cannot be built: {0}")]
    Build(String),
}

/// Builds the email for one auth-link-issued event. Its `Message-ID` derives from the event id,
/// so a receiving system that de-duplicates by Message-ID sees a resend as the same mail.
pub fn auth_link_email(
    from: &Mailbox,
    event: &Envelope<AuthLinkIssued>,
) -> Result<Message, EmailError> {
    let link = checked_link(&event.payload.auth_url)?;
    let to: Mailbox = event
        .payload
        .user_email
        .as_str()
        .parse()
        .map_err(|e: lettre::address::AddressError| EmailError::Recipient(e.to_string()))?;
    let expiry = Expiry::new(event.occurred_at, event.payload.expires_at);
    let domain = from.email.domain();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(SUBJECT)
        .message_id(Some(format!("<auth-link.{}@{domain}>", event.id)))
        .multipart(MultiPart::alternative_plain_html(
            text_body(link, &expiry),
            html_body(link, &expiry),
        ))
        .map_err(|e| EmailError::Build(e.to_string()))
}

/// The link, if it is an absolute http(s) URL.
fn checked_link(raw: &str) -> Result<&str, EmailError> {
    match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Ok(raw),
        _ => Err(EmailError::UnsafeLink),
    }
}

/// Until when the link works, in words.
struct Expiry {
    /// `2025-10-05 12:10 UTC`
    at: String,
    /// `10 minutes`, when the validity is known and positive.
    valid_for: Option<String>,
}

impl Expiry {
    fn new(issued: DateTime<Utc>, expires: DateTime<Utc>) -> Self {
        let minutes = (expires - issued).num_minutes();
        let valid_for = match minutes {
            ..=0 => None,
            1 => Some("1 minute".to_owned()),
            m if m < 120 => Some(format!("{m} minutes")),
            m => Some(format!("{} hours", m / 60)),
        };
        Self {
            at: expires.format("%Y-%m-%d %H:%M UTC").to_string(),
            valid_for,
        }
    }

    fn sentence(&self) -> String {
        match &self.valid_for {
            Some(span) => format!("The link works for {span}, until {}.", self.at),
            None => format!("The link works until {}.", self.at),
        }
    }
}

fn text_body(link: &str, expiry: &Expiry) -> String {
    format!(
        "Hello,\n\
         \n\
         To connect your Google Calendar, open this link and allow access:\n\
         \n\
         {link}\n\
         \n\
         {} After that, ask for a new link.\n\
         \n\
         If you did not ask to connect a calendar, you can ignore this email.\n",
        expiry.sentence()
    )
}

fn html_body(link: &str, expiry: &Expiry) -> String {
    let link = escape_html(link);
    let sentence = escape_html(&expiry.sentence());
    format!(
        "<!DOCTYPE html>\n\
         <html><head><meta charset=\"utf-8\"><title>{SUBJECT}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n\
         <p>Hello,</p>\n\
         <p>To connect your Google Calendar, open this link and allow access:</p>\n\
         <p><a href=\"{link}\">Connect Google Calendar</a></p>\n\
         <p>If the button does not work, copy this address into your browser:<br>\n\
         <span style=\"word-break: break-all\">{link}</span></p>\n\
         <p>{sentence} After that, ask for a new link.</p>\n\
         <p>If you did not ask to connect a calendar, you can ignore this email.</p>\n\
         </body></html>\n"
    )
}

/// Escapes text for HTML element content and quoted attribute values (`&`, `<`, `>`, `"`,
/// `'`), with the `html-escape` crate.
pub fn escape_html(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use schemas::{SubaccountId, UserEmail};

    fn event(url: &str) -> Envelope<AuthLinkIssued> {
        let mut event = Envelope::new(
            SubaccountId::parse("68cf05f060d294db17c0685e").expect("id"),
            uuid::Uuid::now_v7(),
            AuthLinkIssued {
                user_email: UserEmail::parse("user@example.com").expect("email"),
                auth_url: url.to_owned(),
                expires_at: Utc.with_ymd_and_hms(2025, 10, 5, 12, 10, 0).unwrap(),
            },
        );
        event.occurred_at = Utc.with_ymd_and_hms(2025, 10, 5, 12, 0, 0).unwrap();
        event
    }

    fn from() -> Mailbox {
        "Calendar Connector <no-reply@example.com>"
            .parse()
            .expect("mailbox")
    }

    #[test]
    fn html_escaping_covers_every_special_character() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
    }

    #[test]
    fn both_parts_carry_the_link_and_the_expiry_and_the_html_is_escaped() {
        let link = "https://accounts.example/o/oauth2/auth?client_id=a&state=S&scope=x%20y";
        let expiry = Expiry::new(event(link).occurred_at, event(link).payload.expires_at);
        let text = text_body(link, &expiry);
        assert!(text.contains(link), "{text}");
        assert!(
            text.contains("works for 10 minutes, until 2025-10-05 12:10 UTC"),
            "{text}"
        );
        let html = html_body(link, &expiry);
        let escaped =
            "https://accounts.example/o/oauth2/auth?client_id=a&amp;state=S&amp;scope=x%20y";
        assert!(html.contains(&format!("href=\"{escaped}\"")), "{html}");
        assert!(!html.contains("client_id=a&state"), "raw & in HTML: {html}");
        assert!(html.contains("12:10 UTC"), "{html}");
    }

    #[test]
    fn the_message_is_addressed_and_identified_by_the_event() {
        let e = event("https://accounts.example/auth?state=S");
        let message = auth_link_email(&from(), &e).expect("builds");
        let envelope = message.envelope();
        assert_eq!(envelope.to()[0].to_string(), "user@example.com");
        assert_eq!(
            envelope.from().map(ToString::to_string).as_deref(),
            Some("no-reply@example.com")
        );
        let raw = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(
            raw.contains(&format!("Message-ID: <auth-link.{}@example.com>", e.id)),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        assert!(raw.contains(&format!("Subject: {SUBJECT}")), "{raw}");
    }

    #[test]
    fn links_that_are_not_http_are_refused() {
        for bad in [
            "javascript:alert(1)",
            "data:text/html,<b>x</b>",
            "/relative/path",
            "ftp://example.com/x",
        ] {
            assert_eq!(
                auth_link_email(&from(), &event(bad)).map(|_| ()),
                Err(EmailError::UnsafeLink),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiry_wording_handles_odd_spans() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            Expiry::new(t0, t0 + chrono::Duration::hours(3)).sentence(),
            "The link works for 3 hours, until 2025-01-01 03:00 UTC."
        );
        assert_eq!(
            Expiry::new(t0, t0 - chrono::Duration::minutes(1)).sentence(),
            "The link works until 2024-12-31 23:59 UTC."
        );
    }
}
