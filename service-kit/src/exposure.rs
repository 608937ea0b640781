//! Public defaults on a real network: refused at start-up.
//!
//! Every setting with a public development default (the JWT secret, the token-encryption and
//! webhook-secret keys, the local OAuth client secret) and the api's dev mode are fine on a
//! developer's loopback and dangerous anywhere else: anyone who has read this repository can
//! mint tokens, read stored secrets or impersonate the OAuth client. A service therefore
//! describes what it listens on and which of its settings are still public ([`Exposure`]); when
//! any listener is not on loopback and any setting is public, it refuses to start (exit 78),
//! one line per offending setting, unless the operator says `ALLOW_INSECURE_DEFAULTS=true`, in
//! which case it starts with a loud warning per setting.
//!
//! "Loopback" means the address itself: `127.0.0.0/8` or `::1`. `0.0.0.0` and `::` listen on
//! every interface and count as exposed.

use std::fmt;
use std::net::SocketAddr;

/// Whether a host name from a URL is this machine's loopback: `localhost`, or an address in
/// `127.0.0.0/8` or `::1` (brackets allowed). Any other name may resolve anywhere.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The setting that lets a service start with public defaults on a non-loopback address.
pub const ALLOW_INSECURE_DEFAULTS: &str = "ALLOW_INSECURE_DEFAULTS";

/// What a service listens on and which of its settings still hold a public default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    listeners: Vec<Listener>,
    insecure: Vec<Insecure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Listener {
    setting: &'static str,
    addr: SocketAddr,
}

/// One setting in its insecure state and what that lets an attacker do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insecure {
    pub setting: &'static str,
    pub risk: &'static str,
}

/// What start-up does about an [`Exposure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No public default in effect.
    Secure,
    /// Public defaults in effect, every listener on loopback: allowed, noted in the log.
    LoopbackOnly(Vec<Insecure>),
    /// Public defaults on a reachable address, allowed by `ALLOW_INSECURE_DEFAULTS=true`.
    Allowed(Exposed),
    /// Public defaults on a reachable address: the service must not start.
    Refused(Exposed),
}

/// Public defaults on a listener that is not loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The first non-loopback listener: the setting that chose it and its address.
    pub listener: (&'static str, SocketAddr),
    pub insecure: Vec<Insecure>,
}

impl Exposure {
    /// A service listening on `addr`, chosen by `setting`.
    pub fn listening(setting: &'static str, addr: SocketAddr) -> Self {
        Self {
            listeners: vec![Listener { setting, addr }],
            insecure: Vec::new(),
        }
    }

    /// Records `setting` as public when `condition` holds.
    #[must_use]
    pub fn insecure_if(
        mut self,
        condition: bool,
        setting: &'static str,
        risk: &'static str,
    ) -> Self {
        if condition {
            self.insecure.push(Insecure { setting, risk });
        }
        self
    }

    /// The decision, given the operator's `ALLOW_INSECURE_DEFAULTS`.
    pub fn verdict(&self, allow_insecure: bool) -> Verdict {
        if self.insecure.is_empty() {
            return Verdict::Secure;
        }
        let Some(open) = self.listeners.iter().find(|l| !l.addr.ip().is_loopback()) else {
            return Verdict::LoopbackOnly(self.insecure.clone());
        };
        let exposed = Exposed {
            listener: (open.setting, open.addr),
            insecure: self.insecure.clone(),
        };
        if allow_insecure {
            Verdict::Allowed(exposed)
        } else {
            Verdict::Refused(exposed)
        }
    }
}

impl Exposed {
    /// One line per offending setting, naming the setting, the risk and the listener.
    pub fn lines(&self) -> Vec<String> {
        let (setting, addr) = self.listener;
        self.insecure
            .iter()
            .map(|i| {
                format!(
                    "{}: public default in effect ({}) while listening on {addr} ({setting})",
                    i.setting, i.risk
                )
            })
            .collect()
    }
}

impl fmt::Display for Exposed {
    /// The refusal as printed on stderr: the offending settings, then what to do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        write!(
            f,
            "refusing to start: set these (`gcal-ops secrets generate` makes real values), listen on \
             127.0.0.1, or set {ALLOW_INSECURE_DEFAULTS}=true to run anyway"
        )
    }
}

/// Logs the verdict once telemetry is up: a warning per public setting, louder when exposed.
pub fn log(service: &str, verdict: &Verdict) {
    match verdict {
        Verdict::Secure | Verdict::Refused(_) => {}
        Verdict::LoopbackOnly(insecure) => {
            for i in insecure {
                tracing::warn!(
                    service,
                    setting = i.setting,
                    "{}: public default in effect ({}); accepted because every listener is on \
                     loopback, refused on any other address",
                    i.setting,
                    i.risk
                );
            }
        }
        Verdict::Allowed(exposed) => {
            for line in exposed.lines() {
                tracing::warn!(
                    service,
                    "INSECURE: {line}; started only because {ALLOW_INSECURE_DEFAULTS}=true"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(raw: &str) -> SocketAddr {
        raw.parse().expect("socket address")
    }

    fn with_dev_secret(listen: &str) -> Exposure {
        Exposure::listening("API_HTTP_ADDR", addr(listen))
            .insecure_if(true, "JWT_SECRET", "anyone can mint tokens")
            .insecure_if(false, "WEBHOOK_SECRET_KEYS", "never shown")
    }

    #[test]
    fn real_settings_are_secure_anywhere() {
        let exposure = Exposure::listening("API_HTTP_ADDR", addr("0.0.0.0:3002")).insecure_if(
            false,
            "JWT_SECRET",
            "x",
        );
        assert_eq!(exposure.verdict(false), Verdict::Secure);
    }

    #[test]
    fn public_defaults_on_loopback_are_allowed() {
        for listen in ["127.0.0.1:3002", "127.8.9.1:1", "[::1]:3002"] {
            assert!(
                matches!(with_dev_secret(listen).verdict(false), Verdict::LoopbackOnly(ref i) if i.len() == 1),
                "{listen}"
            );
        }
    }

    #[test]
    fn public_defaults_on_any_other_address_are_refused_naming_each_setting() {
        for listen in [
            "0.0.0.0:3002",
            "[::]:3002",
            "10.0.0.5:3002",
            "[::ffff:127.0.0.1]:1",
        ] {
            let Verdict::Refused(exposed) = with_dev_secret(listen).verdict(false) else {
                panic!("{listen} not refused");
            };
            let text = exposed.to_string();
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(
                text.starts_with("JWT_SECRET: public default in effect"),
                "{text}"
            );
            assert!(text.contains("(API_HTTP_ADDR)"), "{text}");
            assert!(text.contains("ALLOW_INSECURE_DEFAULTS=true"), "{text}");
            assert!(!text.contains("WEBHOOK_SECRET_KEYS"), "{text}");
        }
    }

    #[test]
    fn the_operator_may_allow_them_explicitly() {
        assert!(matches!(
            with_dev_secret("0.0.0.0:1").verdict(true),
            Verdict::Allowed(_)
        ));
    }
}
