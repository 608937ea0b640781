//! `CONSENT_ACCOUNT_POLICY`: which Google account may complete a consent link.
//!
//! - `any` (the default, the spec's semantics): whichever account the person signs in with,
//!   even one that differs from the invited `userEmail` (the spec's own example stores
//!   `user@example.com` with `googleuser@gmail.com`).
//! - `invited`: the account's verified email must be the link's `userEmail` (trimmed and
//!   lowercased on both sides), so a forwarded or phished link cannot connect someone else.
//! - `domain`: the account's verified email must be in one of `CONSENT_ALLOWED_DOMAINS`
//!   (compared as lowercase ASCII, internationalized names in their punycode form).
//!
//! Under `invited` and `domain` only an email the provider says is verified
//! (`email_verified: true`) counts: an unverified or unstated one is refused as a mismatch.

use std::fmt;
use std::str::FromStr;

use service_kit::config::Env;

use crate::provider::Identity;

/// The policy, with the allowed domains when it is `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentPolicy {
    Any,
    Invited,
    Domain(AllowedDomains),
}

/// `CONSENT_ALLOWED_DOMAINS`: non-empty, each a lowercase ASCII domain (IDNA applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDomains(Vec<String>);

/// Why an account was refused, and what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub expected: Expected,
    /// The account that consented, as the provider named it.
    pub used: String,
    /// The account is the expected one, but its email is not verified.
    pub unverified: bool,
}

/// The account(s) the policy would have accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The invited address (`userEmail`).
    Invited(String),
    /// Any account in these domains.
    Domains(Vec<String>),
}

impl ConsentPolicy {
    /// Reads `CONSENT_ACCOUNT_POLICY` and `CONSENT_ALLOWED_DOMAINS`. `domain` without
    /// domains, and domains without `domain`, are refused: either would let an operator
    /// believe accounts are bound when they are not.
    pub fn from_env(env: &mut Env) -> Self {
        let kind: PolicyKind = env.value(
            "CONSENT_ACCOUNT_POLICY",
            "any",
            "Which Google account may complete a consent link: any (the spec's semantics), \
             invited (the verified email must be the link's userEmail) or domain (the verified \
             email's domain must be in CONSENT_ALLOWED_DOMAINS). A refused account stores \
             nothing and its grant is revoked at once.",
        );
        let domains = env.optional::<AllowedDomains>(
            "CONSENT_ALLOWED_DOMAINS",
            "Comma-separated email domains whose Google accounts may connect when \
             CONSENT_ACCOUNT_POLICY=domain (required then, refused otherwise).",
        );
        match (kind, domains) {
            (PolicyKind::Domain, Some(domains)) => Self::Domain(domains),
            (PolicyKind::Domain, None) => {
                env.problem(
                    "CONSENT_ALLOWED_DOMAINS",
                    "is required when CONSENT_ACCOUNT_POLICY=domain: list the allowed email \
                     domains, e.g. example.com,other.org",
                );
                Self::Any
            }
            (kind, Some(_)) => {
                env.problem(
                    "CONSENT_ALLOWED_DOMAINS",
                    format!(
                        "is only used with CONSENT_ACCOUNT_POLICY=domain (it is {kind}): set \
                         the policy to domain, or unset CONSENT_ALLOWED_DOMAINS"
                    ),
                );
                kind.without_domains()
            }
            (kind, None) => kind.without_domains(),
        }
    }

    /// The policy's name, as configured (logs, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Invited => "invited",
            Self::Domain(_) => "domain",
        }
    }

    /// Whether `identity` may complete a link that invited `invited`.
    pub fn check(&self, invited: &str, identity: &Identity) -> Result<(), Mismatch> {
        let used = normalize(&identity.email);
        let (expected, matches) = match self {
            Self::Any => return Ok(()),
            Self::Invited => {
                let invited = normalize(invited);
                let matches = used == invited;
                (Expected::Invited(invited), matches)
            }
            Self::Domain(domains) => {
                let matches = domain_of(&used).is_some_and(|domain| domains.0.contains(&domain));
                (Expected::Domains(domains.0.clone()), matches)
            }
        };
        if matches && identity.email_verified {
            return Ok(());
        }
        Err(Mismatch {
            expected,
            used,
            unverified: matches,
        })
    }
}

impl Mismatch {
    /// For the connection-failed event and logs: expected and actual account.
    pub fn describe(&self) -> String {
        if self.unverified {
            return format!(
                "the Google account {} has no verified email address; {} requires one",
                self.used,
                self.expected.describe()
            );
        }
        format!(
            "{} was expected, but the Google account used was {}",
            self.expected.describe(),
            self.used
        )
    }

    /// What the person reads on the page: who was expected, who signed in, what happened.
    pub fn explain(&self) -> String {
        let outcome = "Nothing was connected, and the access you just gave was withdrawn.";
        if self.unverified {
            return format!(
                "You signed in to Google as {}, but Google has not verified that email address, \
                 and only a verified address can be connected here. {outcome}",
                self.used
            );
        }
        match &self.expected {
            Expected::Invited(invited) => format!(
                "This link was sent for the Google account {invited}, but you signed in to Google \
                 as {}. {outcome}",
                self.used
            ),
            Expected::Domains(domains) => format!(
                "Only Google accounts of {} can be connected here, but you signed in to Google as \
                 {}. {outcome}",
                or_list(domains),
                self.used
            ),
        }
    }

    /// The `login_hint` of a new attempt: the invited address, when the policy would accept it.
    pub fn login_hint<'a>(&'a self, invited: &'a str) -> Option<&'a str> {
        match &self.expected {
            Expected::Invited(invited) => Some(invited),
            Expected::Domains(domains) => domain_of(&normalize(invited))
                .is_some_and(|domain| domains.contains(&domain))
                .then_some(invited),
        }
    }

    /// The label of the page's "try again" link.
    pub fn retry_label(&self, login_hint: Option<&str>) -> String {
        match (login_hint, &self.expected) {
            (Some(hint), _) => format!("Try again with {hint}"),
            (None, Expected::Domains(domains)) => {
                format!("Try again with an account of {}", or_list(domains))
            }
            (None, Expected::Invited(invited)) => format!("Try again with {invited}"),
        }
    }
}

impl Expected {
    fn describe(&self) -> String {
        match self {
            Self::Invited(invited) => format!("the invited account {invited}"),
            Self::Domains(domains) => format!("an account of {}", or_list(domains)),
        }
    }
}

/// How both sides of a comparison are written: trimmed, lowercase.
fn normalize(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The ASCII (punycode) lowercase domain of an email address.
fn domain_of(email: &str) -> Option<String> {
    let (_, domain) = email.rsplit_once('@')?;
    ascii_domain(domain).ok()
}

/// IDNA to ASCII, lowercase: `Bücher.Example` and `xn--bcher-kva.example` are one domain.
fn ascii_domain(domain: &str) -> Result<String, String> {
    let domain = domain.trim().trim_end_matches('.');
    match url::Host::parse(domain) {
        Ok(url::Host::Domain(ascii)) if ascii.contains('.') => Ok(ascii),
        _ => Err(format!(
            "{domain:?} is not a domain name such as example.com"
        )),
    }
}

fn or_list(domains: &[String]) -> String {
    match domains {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

impl FromStr for AllowedDomains {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut domains = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let domain = ascii_domain(part.trim_start_matches('@'))?;
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        if domains.is_empty() {
            return Err("must list at least one domain, e.g. example.com,other.org".into());
        }
        Ok(Self(domains))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyKind {
    Any,
    Invited,
    Domain,
}

impl PolicyKind {
    fn without_domains(self) -> ConsentPolicy {
        match self {
            Self::Any | Self::Domain => ConsentPolicy::Any,
            Self::Invited => ConsentPolicy::Invited,
        }
    }
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(Self::Any),
            "invited" => Ok(Self::Invited),
            "domain" => Ok(Self::Domain),
            _ => Err("must be any, invited or domain".into()),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::Invited => "invited",
            Self::Domain => "domain",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> Result<ConsentPolicy, String> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let policy = ConsentPolicy::from_env(&mut env);
        env.finish().map(|()| policy).map_err(|e| e.to_string())
    }

    fn verified(email: &str) -> Identity {
        Identity {
            email: email.into(),
            email_verified: true,
        }
    }

    #[test]
    fn the_default_is_any_and_accepts_every_account() {
        let any = policy(&[]).expect("default");
        assert_eq!(any, ConsentPolicy::Any);
        let unverified = Identity {
            email: "someone@else.example".into(),
            email_verified: false,
        };
        assert!(any.check("user@example.com", &unverified).is_ok());
    }

    #[test]
    fn domain_without_domains_is_refused_naming_the_setting() {
        let error = policy(&[("CONSENT_ACCOUNT_POLICY", "domain")]).expect_err("refused");
        assert!(error.contains("CONSENT_ALLOWED_DOMAINS"), "{error}");
        assert!(error.contains("required"), "{error}");
        let error = policy(&[
            ("CONSENT_ACCOUNT_POLICY", "domain"),
            ("CONSENT_ALLOWED_DOMAINS", " , ,"),
        ])
        .expect_err("refused");
        assert!(error.contains("CONSENT_ALLOWED_DOMAINS"), "{error}");
    }

    #[test]
    fn domains_without_the_domain_policy_are_refused() {
        let error = policy(&[("CONSENT_ALLOWED_DOMAINS", "example.com")]).expect_err("refused");
        assert!(error.contains("CONSENT_ACCOUNT_POLICY=domain"), "{error}");
    }

    #[test]
    fn unknown_policies_are_refused() {
        let error = policy(&[("CONSENT_ACCOUNT_POLICY", "same")]).expect_err("refused");
        assert!(error.contains("CONSENT_ACCOUNT_POLICY"), "{error}");
    }

    #[test]
    fn invited_compares_trimmed_lowercase_verified_emails() {
        let invited = policy(&[("CONSENT_ACCOUNT_POLICY", "invited")]).expect("valid");
        assert!(
            invited
                .check(" User@Example.com", &verified("user@example.COM"))
                .is_ok()
        );
        let other = invited
            .check("user@example.com", &verified("other@gmail.com"))
            .expect_err("mismatch");
        assert_eq!(other.expected, Expected::Invited("user@example.com".into()));
        assert_eq!(other.used, "other@gmail.com");
        assert!(!other.unverified);
        assert!(other.explain().contains("user@example.com"));
        assert!(other.explain().contains("other@gmail.com"));
        let unverified = invited
            .check(
                "user@example.com",
                &Identity {
                    email: "user@example.com".into(),
                    email_verified: false,
                },
            )
            .expect_err("unverified");
        assert!(unverified.unverified);
    }

    #[test]
    fn domain_compares_idna_lowercase_domains() {
        let domain = policy(&[
            ("CONSENT_ACCOUNT_POLICY", "Domain"),
            (
                "CONSENT_ALLOWED_DOMAINS",
                "Example.com, bücher.example ,@other.org",
            ),
        ])
        .expect("valid");
        let ConsentPolicy::Domain(domains) = &domain else {
            panic!("{domain:?}");
        };
        assert_eq!(
            domains.0,
            ["example.com", "xn--bcher-kva.example", "other.org"]
        );
        for ok in [
            "a@EXAMPLE.com",
            "b@xn--bcher-kva.example",
            "c@Bücher.example",
            "d@other.org",
        ] {
            assert!(domain.check("x@y.example", &verified(ok)).is_ok(), "{ok}");
        }
        for refused in ["a@sub.example.com", "a@example.com.evil", "a@gmail.com"] {
            let mismatch = domain
                .check("x@example.com", &verified(refused))
                .expect_err(refused);
            assert_eq!(mismatch.login_hint("x@example.com"), Some("x@example.com"));
            assert_eq!(mismatch.login_hint("x@gmail.com"), None);
        }
        assert!(
            policy(&[
                ("CONSENT_ACCOUNT_POLICY", "domain"),
                ("CONSENT_ALLOWED_DOMAINS", "not a domain"),
            ])
            .is_err()
        );
    }
}
