//! The authorization email: a plain-text and an HTML part saying who asks (the product and the
//! tenant), what access in plain words, until when the link works, and that an unexpected
//! request can be ignored ([`service_kit::consent`], the consent page's wording too), with the
//! link. Pure: no I/O, so its wording and escaping are tested without an SMTP server.

use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};
use schemas::events::AuthLinkIssued;
use schemas::{Envelope, UserEmail};
use service_kit::consent::{self, ConsentNotice};

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
    let to = recipient(&event.payload.user_email)?;
    let content = Content::of(event);
    let domain = from.email.domain();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(SUBJECT)
        .message_id(Some(format!("<auth-link.{}@{domain}>", event.id)))
        .multipart(MultiPart::alternative_plain_html(
            text_body(link, &content),
            html_body(link, &content),
        ))
        .map_err(|e| EmailError::Build(e.to_string()))
}

/// The mailbox for `email`: its SMTP form (domain in IDNA A-labels), built as a lettre
/// `Address` rather than parsed as a header mailbox. The api accepts only addresses this
/// succeeds for (`UserEmail::parse`); an error here means an event from an older version.
pub fn recipient(email: &UserEmail) -> Result<Mailbox, EmailError> {
    let address: Address = email
        .smtp_address()
        .parse()
        .map_err(|e: lettre::address::AddressError| EmailError::Recipient(e.to_string()))?;
    Ok(Mailbox::new(None, address))
}

/// The link, if it is an absolute http(s) URL.
fn checked_link(raw: &str) -> Result<&str, EmailError> {
    match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Ok(raw),
        _ => Err(EmailError::UnsafeLink),
    }
}

/// The sentences of the email, as plain text.
struct Content {
    who_asks: String,
    tenant: String,
    access: Vec<String>,
    expiry: String,
}

impl Content {
    fn of(event: &Envelope<AuthLinkIssued>) -> Self {
        let payload = &event.payload;
        let notice = ConsentNotice {
            product_name: payload
                .product_name
                .as_ref()
                .map_or(consent::DEFAULT_PRODUCT_NAME, |name| name.as_str()),
            tenant_name: payload.tenant_name.as_ref().map(|name| name.as_str()),
            subaccount_id: event.subaccount_id.as_str(),
            scopes: &payload.scopes,
            expires_at: payload.expires_at,
        };
        // From when the state was stored: the link's true life, whenever the mail goes out.
        let issued: DateTime<Utc> = payload.issued_at.unwrap_or(event.occurred_at);
        Self {
            who_asks: notice.who_asks(),
            tenant: notice.tenant(),
            access: notice.access(),
            expiry: notice.expiry(issued),
        }
    }
}

fn text_body(link: &str, content: &Content) -> String {
    let mut text = format!("Hello,\n\n{}\n\n", content.who_asks);
    if !content.access.is_empty() {
        text.push_str(&format!(
            "If you allow it, {} will be able to:\n",
            content.tenant
        ));
        for line in &content.access {
            text.push_str(&format!("- {line}\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "To review the request and continue to Google, open this link:\n\n{link}\n\n\
         {} After that, ask for a new link.\n\n{}\n",
        content.expiry,
        consent::IGNORE_EMAIL
    ));
    text
}

fn html_body(link: &str, content: &Content) -> String {
    let link = escape_html(link);
    let access = if content.access.is_empty() {
        String::new()
    } else {
        let items: String = content
            .access
            .iter()
            .map(|line| format!("<li>{}</li>", escape_html(line)))
            .collect();
        format!(
            "<p>If you allow it, {} will be able to:</p>\n<ul>{items}</ul>\n",
            escape_html(&content.tenant)
        )
    };
    format!(
        "<!DOCTYPE html>\n\
         <html><head><meta charset=\"utf-8\"><title>{SUBJECT}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n\
         <p>Hello,</p>\n\
         <p>{who_asks}</p>\n\
         {access}\
         <p><a href=\"{link}\">Review the request</a></p>\n\
         <p>If the button does not work, copy this address into your browser:<br>\n\
         <span style=\"word-break: break-all\">{link}</span></p>\n\
         <p>{expiry} After that, ask for a new link.</p>\n\
         <p>{ignore}</p>\n\
         </body></html>\n",
        who_asks = escape_html(&content.who_asks),
        expiry = escape_html(&content.expiry),
        ignore = escape_html(consent::IGNORE_EMAIL),
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
    use schemas::{DisplayName, SubaccountId};

    fn event(url: &str) -> Envelope<AuthLinkIssued> {
        let mut event = Envelope::new(
            SubaccountId::parse("68cf05f060d294db17c0685e").expect("id"),
            uuid::Uuid::now_v7(),
            AuthLinkIssued {
                user_email: UserEmail::parse("user@example.com").expect("email"),
                auth_url: url.to_owned(),
                expires_at: Utc.with_ymd_and_hms(2025, 10, 5, 12, 10, 0).unwrap(),
                issued_at: Some(Utc.with_ymd_and_hms(2025, 10, 5, 12, 0, 0).unwrap()),
                product_name: Some(DisplayName::parse("Example Scheduler").expect("name")),
                tenant_name: Some(DisplayName::parse("Acme <b>Sales</b>").expect("name")),
                scopes: vec![
                    "https://www.googleapis.com/auth/calendar.readonly".into(),
                    "https://example.com/auth/other".into(),
                ],
            },
        );
        // The event is created a moment after the state (the old email said 9 minutes).
        event.occurred_at = Utc.with_ymd_and_hms(2025, 10, 5, 12, 0, 1).unwrap();
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
    fn both_parts_say_who_asks_for_what_until_when_and_the_html_is_escaped() {
        let link = "https://accounts.example/o/oauth2/auth?client_id=a&state=S&scope=x%20y";
        let content = Content::of(&event(link));
        let text = text_body(link, &content);
        let html = html_body(link, &content);
        assert!(text.contains(link), "{text}");
        for part in [&text, &html] {
            assert!(part.contains("through Example Scheduler"), "{part}");
            assert!(part.contains("see your calendars and events"), "{part}");
            assert!(part.contains("https://example.com/auth/other"), "{part}");
            assert!(
                part.contains("expires at 2025-10-05 12:10 UTC (in 10 minutes)"),
                "{part}"
            );
            assert!(
                part.contains("If you did not expect this, ignore this email"),
                "{part}"
            );
        }
        assert!(text.contains("Acme <b>Sales</b> asks"), "{text}");
        assert!(
            html.contains("Acme &lt;b&gt;Sales&lt;/b&gt; asks"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "tenant name not escaped: {html}");
        let escaped =
            "https://accounts.example/o/oauth2/auth?client_id=a&amp;state=S&amp;scope=x%20y";
        assert!(html.contains(&format!("href=\"{escaped}\"")), "{html}");
        assert!(!html.contains("client_id=a&state"), "raw & in HTML: {html}");
    }

    #[test]
    fn events_of_older_versions_still_make_a_sensible_email() {
        let mut e = event("https://accounts.example/auth?state=S");
        e.payload.issued_at = None;
        e.payload.product_name = None;
        e.payload.tenant_name = None;
        e.payload.scopes.clear();
        let text = text_body("https://x.example/", &Content::of(&e));
        assert!(
            text.contains("Account 68cf05f060d294db17c0685e asks, through Calendar connector"),
            "{text}"
        );
        assert!(text.contains("(in 10 minutes)"), "{text}");
        assert!(!text.contains("will be able to"), "{text}");
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
    fn every_address_the_api_accepts_is_one_smtp_can_send_to() {
        // Every printable ASCII character in a local part, internationalized domains, and
        // what the api must refuse: whatever `UserEmail::parse` accepts becomes an ASCII
        // envelope recipient and a message that builds.
        let mut candidates: Vec<String> = (0x20u8..0x7f)
            .map(|c| format!("a{}b@example.com", char::from(c)))
            .collect();
        candidates.extend(
            [
                "user@bücher.example",
                "ÄÖÜ@example.com",
                "user@ＥＸＡＭＰＬＥ.com",
                r#""<script>"@example.com"#,
                "a@[10.0.0.5]",
                "first.last+tag@sub.example.co.uk",
            ]
            .map(str::to_owned),
        );
        let mut accepted = 0;
        for candidate in &candidates {
            let Ok(email) = UserEmail::parse(candidate) else {
                continue;
            };
            accepted += 1;
            let mut e = event("https://accounts.example/auth?state=S");
            e.payload.user_email = email.clone();
            let message = auth_link_email(&from(), &e)
                .unwrap_or_else(|err| panic!("{candidate:?} accepted but not sendable: {err}"));
            let to = message.envelope().to()[0].to_string();
            assert!(to.is_ascii(), "{candidate:?} → {to}");
            assert_eq!(to, email.smtp_address());
        }
        assert!(accepted > 20, "only {accepted} accepted");
    }

    #[test]
    fn an_internationalized_domain_is_addressed_in_punycode() {
        let mut e = event("https://accounts.example/auth?state=S");
        e.payload.user_email = UserEmail::parse("user@bücher.example").expect("IDN");
        let message = auth_link_email(&from(), &e).expect("builds");
        assert_eq!(
            message.envelope().to()[0].to_string(),
            "user@xn--bcher-kva.example"
        );
        let raw = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(raw.contains("To: user@xn--bcher-kva.example"), "{raw}");
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
}
