//! The mailer-worker's settings.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use service_kit::ServiceConfig;
use service_kit::config::{CommonConfig, Env, HumanDuration, RetryDelays};
use service_kit::consumer::{Fairness, FairnessSettings};
use service_kit::exposure::Exposure;

#[derive(Debug, Clone)]
pub struct MailerWorkerConfig {
    pub common: CommonConfig,
    /// Address of the health and metrics endpoints.
    pub health_addr: SocketAddr,
    /// Where mail is handed over, and how (plain, STARTTLS, implicit TLS, credentials).
    pub smtp_url: SmtpUrl,
    /// Bound on connecting to the SMTP server and on each command of a session.
    pub smtp_timeout: Duration,
    /// The `From` of every email; parsed at start-up so a typo stops the service, not each send.
    pub mail_from: Mailbox,
    /// Deliveries of one event before a retryable failure parks it in the dead-letter stream.
    pub max_deliver: i64,
    /// Emails one replica sends at the same time.
    pub concurrency: usize,
    /// Emails of one subaccount one replica sends at the same time, so a flood from one
    /// tenant leaves the other slots to everyone else.
    pub per_tenant_concurrency: usize,
    /// Auth-link events one replica pulls ahead and holds (waiting and in flight): how far it
    /// looks past one tenant's flood for other tenants' links.
    pub buffer: usize,
    /// JetStream redelivery delays after the 1st, 2nd, ... failed delivery (the last repeats).
    pub retry_delays: Vec<Duration>,
    /// How long the record of a sent link is kept (a TTL index on `claimedAt`). It is what
    /// stops a redelivered or replayed event from being emailed twice, so it must outlive the
    /// replay window (`EVENTS_MAX_AGE`).
    pub sent_links_ttl: Duration,
}

impl ServiceConfig for MailerWorkerConfig {
    const SERVICE: &'static str = crate::SERVICE;

    fn read(env: &mut Env) -> Self {
        let common = CommonConfig::from_env(env);
        let health_addr = env.value(
            "MAILER_WORKER_HEALTH_ADDR",
            "127.0.0.1:3006",
            "Address of the health and metrics endpoints.",
        );
        let smtp_url = env.value(
            "SMTP_URL",
            "smtp://127.0.0.1:1025",
            "SMTP server the mailer hands emails to: smtp://host:port (plain), smtp://host:port?tls=required (STARTTLS), smtps://host:port (TLS); optional user:password@.",
        );
        let smtp_timeout: Duration = env
            .value::<HumanDuration>(
                "SMTP_TIMEOUT",
                "10s",
                "Bound on connecting to the SMTP server and on each SMTP command.",
            )
            .into();
        if smtp_timeout.is_zero() {
            env.problem("SMTP_TIMEOUT", "must be longer than zero");
        }
        let mail_from = env.value(
            "MAIL_FROM",
            "Calendar Connector <no-reply@localhost>",
            "From address of the authorization emails, e.g. `Calendar Connector <no-reply@example.com>`.",
        );
        let max_deliver: i64 = env.value(
            "MAILER_MAX_DELIVER",
            "10",
            "Deliveries of one auth-link event before a retryable failure parks it in the dead-letter stream.",
        );
        if !(1..=1000).contains(&max_deliver) {
            env.problem("MAILER_MAX_DELIVER", "must be between 1 and 1000");
        }
        let concurrency: usize = env.value(
            "MAILER_CONCURRENCY",
            "8",
            "Emails one mailer-worker replica sends at the same time.",
        );
        if !(1..=256).contains(&concurrency) {
            env.problem("MAILER_CONCURRENCY", "must be between 1 and 256");
        }
        let Fairness {
            per_tenant_concurrency,
            buffer,
        } = Fairness::read(
            env,
            &FairnessSettings {
                concurrency: "MAILER_CONCURRENCY",
                per_tenant: "MAILER_PER_TENANT_CONCURRENCY",
                per_tenant_default: "2",
                per_tenant_description: "Emails of one subaccount one mailer-worker replica sends at the same time (1 to MAILER_CONCURRENCY), so one tenant's flood cannot take every slot.",
                buffer: "MAILER_BUFFER",
                buffer_default: "1000",
                buffer_description: "Auth-link events one mailer-worker replica pulls ahead and holds, so another tenant's link is found behind a flood (MAILER_CONCURRENCY to 100000).",
            },
            concurrency,
        );
        let retry_delays: RetryDelays = env.value(
            "MAILER_RETRY_DELAYS",
            "5s,30s,2m,10m",
            "Delays before JetStream redelivers an email that failed transiently: after the 1st, 2nd, ... failure; the last repeats.",
        );
        let sent_links_ttl: Duration = env
            .value::<HumanDuration>(
                "MAILER_SENT_LINKS_TTL",
                "35d",
                "How long the record that a link was emailed is kept (deleted by a TTL index). At least EVENTS_MAX_AGE: the record is what keeps a redelivered or replayed event from being emailed twice.",
            )
            .into();
        if sent_links_ttl < common.streams.events_max_age {
            env.problem(
                "MAILER_SENT_LINKS_TTL",
                "must be at least EVENTS_MAX_AGE: an event replayed after its record expired would be emailed again",
            );
        }
        Self {
            common,
            health_addr,
            smtp_url,
            smtp_timeout,
            mail_from,
            max_deliver,
            concurrency,
            per_tenant_concurrency,
            buffer,
            retry_delays: retry_delays.0,
            sent_links_ttl,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }

    /// The mailer holds no secret with a public default (SMTP credentials have none).
    fn exposure(&self) -> Exposure {
        Exposure::listening("MAILER_WORKER_HEALTH_ADDR", self.health_addr)
    }
}

/// The SMTP server in lettre's URL form. It may hold a password, so it never prints: `Debug`
/// is redacted, and [`SmtpUrl::redacted`] shows where mail goes without the credentials.
#[derive(Clone)]
pub struct SmtpUrl(String);

impl SmtpUrl {
    /// The URL as lettre reads it, credentials included. Only for building the transport.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Scheme, host, port and TLS mode, without user name or password: safe to log.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                // Both setters only fail for URLs that cannot have credentials at all.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => "<unparsable SMTP_URL>".to_owned(),
        }
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmtpUrl(<redacted>)")
    }
}

impl FromStr for SmtpUrl {
    type Err = String;

    /// Checks everything lettre will check, with messages that never repeat the value.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        const FORMS: &str = "smtp://host:port, smtp://host:port?tls=required or smtps://host:port";
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL such as {FORMS} ({e})"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("has no host; expected {FORMS}"));
        }
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        match (url.scheme(), tls.as_deref()) {
            ("smtp", None | Some("required" | "opportunistic")) | ("smtps", None) => {}
            ("smtp" | "smtps", Some(_)) => {
                return Err("tls= must be `required` or `opportunistic` (and only with smtp://; smtps:// is always TLS)".into());
            }
            (scheme, _) => {
                return Err(format!(
                    "scheme `{scheme}` is not supported; expected {FORMS}"
                ));
            }
        }
        if !url.username().is_empty() && url.password().is_none() {
            return Err("has a user name but no password (user:password@host)".into());
        }
        // Whatever else lettre rejects (e.g. credentials that are not valid percent-encoded
        // UTF-8). Its messages may quote parts of the URL, so only say that it failed.
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(raw)
            .map_err(|_| format!("is not accepted by the SMTP client; expected {FORMS}"))?;
        Ok(Self(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        pairs: &[(&str, &str)],
    ) -> Result<MailerWorkerConfig, service_kit::config::ConfigError> {
        MailerWorkerConfig::from_env(Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_all_parse_and_point_at_the_local_sink() {
        let config = read(&[]).expect("defaults are valid");
        assert_eq!(config.smtp_url.redacted(), "smtp://127.0.0.1:1025");
        assert_eq!(config.smtp_timeout, Duration::from_secs(10));
        assert_eq!(config.mail_from.email.to_string(), "no-reply@localhost");
        assert_eq!(config.max_deliver, 10);
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.per_tenant_concurrency, 2);
        assert_eq!(config.buffer, 1000);
        assert_eq!(config.retry_delays.len(), 4);
        assert_eq!(config.retry_delays[3], Duration::from_secs(600));
    }

    #[test]
    fn every_smtp_url_form_is_accepted() {
        for ok in [
            "smtp://127.0.0.1:1025",
            "smtp://mail.example.com:587?tls=required",
            "smtp://mail.example.com:587?tls=opportunistic",
            "smtps://mail.example.com:465",
            "smtps://user:p%40ss@mail.example.com",
        ] {
            ok.parse::<SmtpUrl>()
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn bad_settings_are_each_named_and_no_password_is_echoed() {
        let err = read(&[
            ("SMTP_URL", "http://user:hunter2@mail.example.com"),
            ("MAIL_FROM", "not an address, hunter3"),
            ("SMTP_TIMEOUT", "0s"),
            ("MAILER_MAX_DELIVER", "0"),
            ("MAILER_CONCURRENCY", "many"),
            ("MAILER_RETRY_DELAYS", "1s,soon"),
        ])
        .expect_err("bad settings");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for expected in [
            "SMTP_URL",
            "MAIL_FROM",
            "SMTP_TIMEOUT",
            "MAILER_MAX_DELIVER",
            "MAILER_CONCURRENCY",
            "MAILER_RETRY_DELAYS",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {err}");
        }
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("hunter3"), "{text}");
    }

    #[test]
    fn fairness_settings_must_fit_the_concurrency() {
        for (pairs, setting) in [
            (
                vec![("MAILER_PER_TENANT_CONCURRENCY", "0")],
                "MAILER_PER_TENANT_CONCURRENCY",
            ),
            (
                vec![
                    ("MAILER_CONCURRENCY", "4"),
                    ("MAILER_PER_TENANT_CONCURRENCY", "5"),
                ],
                "MAILER_PER_TENANT_CONCURRENCY",
            ),
            (vec![("MAILER_BUFFER", "7")], "MAILER_BUFFER"),
            (vec![("MAILER_BUFFER", "100001")], "MAILER_BUFFER"),
        ] {
            let err = read(&pairs).expect_err("refused");
            assert!(
                err.problems.iter().any(|p| p.setting == setting),
                "{pairs:?}: {err}"
            );
        }
        let config = read(&[
            ("MAILER_CONCURRENCY", "4"),
            ("MAILER_PER_TENANT_CONCURRENCY", "4"),
            ("MAILER_BUFFER", "4"),
        ])
        .expect("a per-tenant cap equal to the concurrency and the smallest buffer are valid");
        assert_eq!((config.per_tenant_concurrency, config.buffer), (4, 4));
    }

    #[test]
    fn smtp_url_never_prints_its_credentials() {
        let url: SmtpUrl = "smtp://mailer:s3cr3t@mail.example.com:587?tls=required"
            .parse()
            .expect("valid");
        assert_eq!(format!("{url:?}"), "SmtpUrl(<redacted>)");
        let shown = url.redacted();
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("mailer"),
            "{shown}"
        );
        assert!(shown.contains("mail.example.com:587"), "{shown}");
        for bad in [
            "smtp://user@mail.example.com",
            "smtp://mail.example.com?tls=none",
            "smtps://mail.example.com?tls=required",
            "smtp://",
            "mail.example.com:25",
        ] {
            assert!(bad.parse::<SmtpUrl>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn retry_delays_parse_as_a_list() {
        let delays: RetryDelays = " 200ms, 1s ,2m".parse().expect("valid");
        assert_eq!(
            delays.0,
            [
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(120)
            ]
        );
        assert!("".parse::<RetryDelays>().is_err());
        assert!("1s,0s".parse::<RetryDelays>().is_err());
    }
}
