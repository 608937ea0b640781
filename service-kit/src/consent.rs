//! What a person is told before they connect their calendar: who asks, for what access in
//! plain words, until when the link works, and that an unexpected request can be ignored.
//! One wording for the email (mailer-worker) and the consent page (oauth-worker), so both
//! say the same thing. Plain text: each renderer escapes it for HTML.

use chrono::{DateTime, Utc};

/// `PRODUCT_NAME`'s default.
pub const DEFAULT_PRODUCT_NAME: &str = "Calendar connector";

/// The closing line of the email.
pub const IGNORE_EMAIL: &str = "If you did not expect this, ignore this email: nothing is \
connected unless you allow access at Google.";

/// The closing line of the consent page.
pub const IGNORE_PAGE: &str = "If you did not expect this, ignore it and close this page: \
nothing is connected unless you allow access at Google.";

/// The facts of one consent request.
#[derive(Debug, Clone, Copy)]
pub struct ConsentNotice<'a> {
    /// `PRODUCT_NAME`.
    pub product_name: &'a str,
    /// The tenant's display name, when the request named one.
    pub tenant_name: Option<&'a str>,
    /// Named instead when there is no tenant name.
    pub subaccount_id: &'a str,
    /// The OAuth scopes asked for.
    pub scopes: &'a [String],
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
}

impl ConsentNotice<'_> {
    /// The tenant, as a person should read it.
    pub fn tenant(&self) -> String {
        match self.tenant_name {
            Some(name) => name.to_owned(),
            None => format!("Account {}", self.subaccount_id),
        }
    }

    /// `Acme asks, through Calendar connector, to connect your Google Calendar.`
    pub fn who_asks(&self) -> String {
        format!(
            "{} asks, through {}, to connect your Google Calendar.",
            self.tenant(),
            self.product_name
        )
    }

    /// What allowing gives the tenant, one line per distinct access.
    pub fn access(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for scope in self.scopes {
            let line = plain_words(scope);
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines
    }

    /// `This link expires at 2025-10-05 12:10 UTC (in 10 minutes).`, counted from `now` (the
    /// moment the link was issued, for an email; the moment of the answer, for a page).
    pub fn expiry(&self, now: DateTime<Utc>) -> String {
        let at = self.expires_at.format("%Y-%m-%d %H:%M UTC");
        let seconds = (self.expires_at - now).num_seconds();
        if seconds <= 0 {
            return format!("This link expired at {at}.");
        }
        // To the nearest minute: a link issued a moment ago with a 10-minute life says 10.
        let minutes = (seconds + 30) / 60;
        let span = match minutes {
            0 => "less than a minute".to_owned(),
            1 => "1 minute".to_owned(),
            m if m < 120 => format!("{m} minutes"),
            m if m < 48 * 60 => format!("{} hours", (m + 30) / 60),
            m => format!("{} days", (m + 12 * 60) / (24 * 60)),
        };
        format!("This link expires at {at} (in {span}).")
    }
}

/// What a scope lets the tenant do, in plain words; an unknown scope is shown as it is.
pub fn plain_words(scope: &str) -> String {
    let short = scope
        .strip_prefix("https://www.googleapis.com/auth/")
        .unwrap_or(scope);
    let words = match short {
        "calendar" => "see, edit, share and permanently delete all the calendars you can access",
        "calendar.readonly" => "see your calendars and events",
        "calendar.events" => "see and edit the events on all your calendars",
        "calendar.events.readonly" => "see the events on all your calendars",
        "calendar.events.owned" => "see, create, change and delete events on calendars you own",
        "calendar.events.owned.readonly" => "see the events on calendars you own",
        "calendar.calendarlist.readonly" => "see the list of calendars you subscribe to",
        "calendar.calendars.readonly" => {
            "see the title, description, time zone and other \
                                           properties of your calendars"
        }
        "calendar.settings.readonly" => "see your Google Calendar settings",
        "calendar.freebusy" => "see when you are free or busy",
        "openid" => "confirm which Google account is yours",
        "email" | "userinfo.email" => "see your Google account's email address",
        "profile" | "userinfo.profile" => "see your name and profile picture",
        "offline_access" => "keep this access while you are away, until you disconnect",
        _ => return scope.to_owned(),
    };
    words.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn notice<'a>(scopes: &'a [String], tenant: Option<&'static str>) -> ConsentNotice<'a> {
        ConsentNotice {
            product_name: DEFAULT_PRODUCT_NAME,
            tenant_name: tenant,
            subaccount_id: "68cf05f060d294db17c0685e",
            scopes,
            expires_at: Utc.with_ymd_and_hms(2025, 10, 5, 12, 10, 0).unwrap(),
        }
    }

    #[test]
    fn access_is_in_plain_words_and_unknown_scopes_are_shown_verbatim() {
        let scopes: Vec<String> = [
            "https://www.googleapis.com/auth/calendar.readonly",
            "openid",
            "email",
            "https://www.googleapis.com/auth/userinfo.email",
            "https://example.com/auth/unknown",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            notice(&scopes, None).access(),
            [
                "see your calendars and events",
                "confirm which Google account is yours",
                "see your Google account's email address",
                "https://example.com/auth/unknown",
            ]
        );
    }

    #[test]
    fn who_asks_names_the_tenant_or_the_subaccount() {
        assert_eq!(
            notice(&[], Some("Acme")).who_asks(),
            "Acme asks, through Calendar connector, to connect your Google Calendar."
        );
        assert!(
            notice(&[], None)
                .who_asks()
                .starts_with("Account 68cf05f060d294db17c0685e asks")
        );
    }

    #[test]
    fn expiry_tells_the_truth_to_the_minute() {
        let n = notice(&[], None);
        let issued = n.expires_at - chrono::Duration::minutes(10);
        assert_eq!(
            n.expiry(issued),
            "This link expires at 2025-10-05 12:10 UTC (in 10 minutes)."
        );
        // A second after issue it is still a 10-minute link (the old email said 9).
        assert_eq!(
            n.expiry(issued + chrono::Duration::seconds(1)),
            "This link expires at 2025-10-05 12:10 UTC (in 10 minutes)."
        );
        assert_eq!(
            n.expiry(n.expires_at - chrono::Duration::seconds(20)),
            "This link expires at 2025-10-05 12:10 UTC (in less than a minute)."
        );
        assert_eq!(
            n.expiry(n.expires_at - chrono::Duration::hours(3)),
            "This link expires at 2025-10-05 12:10 UTC (in 3 hours)."
        );
        assert_eq!(
            n.expiry(n.expires_at + chrono::Duration::seconds(1)),
            "This link expired at 2025-10-05 12:10 UTC."
        );
    }
}
