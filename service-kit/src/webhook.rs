//! What the api (registration) and the metadata-worker (delivery) share about webhooks: which
//! target URLs are allowed ([`TargetPolicy`], checked at registration and again at every
//! delivery, with a DNS resolver that drops refused addresses so DNS rebinding cannot reach an
//! internal host), the signing secrets ([`WebhookSecrets`], stored encrypted), and the change
//! mark every change of a subaccount's endpoints sets ([`endpoints_changed`]) so the
//! metadata-worker's in-memory endpoint registry notices it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use schemas::documents::google_auth::EncryptedToken;
use zeroize::Zeroizing;

use crate::aead::{Keyring, KeyringSettings, OpenError};
use crate::config::Env;

/// How long registration waits for a target's host name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the metadata-worker's endpoint registry trusts what it loaded, whatever the change
/// mark says: the bound on a change whose mark could not be set.
pub const ENDPOINT_REGISTRY_TTL: Duration = Duration::from_secs(30);
/// A change mark read or set slower than this is given up.
pub const CHANGE_MARK_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest target URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Which webhook targets are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// `WEBHOOK_ALLOW_HTTP`: plain `http://` targets (otherwise only `https://`).
    pub allow_http: bool,
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS`: loopback, private, link-local and other non-public
    /// addresses, and `localhost` names.
    pub allow_private: bool,
}

/// Why a target URL is refused. Messages say what to fix and quote nothing but the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the webhook URL is not a valid absolute URL ({0})")]
    Malformed(String),
    #[error("the webhook URL must use https")]
    NotHttps,
    #[error("the webhook URL must use http or https")]
    UnsupportedScheme,
    #[error("the webhook URL must not contain a user name or password")]
    Credentials,
    #[error(
        "the webhook URL's host `{host}` is or resolves to a loopback, private, link-local or \
         otherwise non-public address, which webhooks may not target"
    )]
    PrivateAddress { host: String },
    #[error("the webhook URL's host `{host}` does not resolve to any address")]
    Unresolvable { host: String },
}

impl TargetError {
    /// A stable word for programs (`details.reason` of the api's 400).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::NotHttps => "not_https",
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::Credentials => "credentials_in_url",
            Self::PrivateAddress { .. } => "private_address",
            Self::Unresolvable { .. } => "unresolvable",
        }
    }
}

impl TargetPolicy {
    /// Reads `WEBHOOK_ALLOW_HTTP` and `WEBHOOK_ALLOW_PRIVATE_TARGETS`.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            allow_http: env.value(
                "WEBHOOK_ALLOW_HTTP",
                "false",
                "Allow plain http:// webhook targets (only https:// otherwise). For local runs and tests.",
            ),
            allow_private: env.value(
                "WEBHOOK_ALLOW_PRIVATE_TARGETS",
                "false",
                "Allow webhook targets on loopback, private, link-local and other non-public addresses (and `localhost`). For local runs and tests.",
            ),
        }
    }

    /// Checks what can be checked without DNS: syntax, scheme, credentials, an IP-literal host
    /// and `localhost` names.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, TargetError> {
        if raw.len() > MAX_URL_LEN {
            return Err(TargetError::Malformed(format!(
                "longer than {MAX_URL_LEN} characters"
            )));
        }
        let url = url::Url::parse(raw.trim()).map_err(|e| TargetError::Malformed(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(TargetError::NotHttps),
            _ => return Err(TargetError::UnsupportedScheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        let refused = |host: &str| TargetError::PrivateAddress {
            host: host.to_owned(),
        };
        match url.host() {
            None => return Err(TargetError::Malformed("no host".into())),
            Some(url::Host::Ipv4(ip)) if !self.allows(IpAddr::V4(ip)) => {
                return Err(refused(&ip.to_string()));
            }
            Some(url::Host::Ipv6(ip)) if !self.allows(IpAddr::V6(ip)) => {
                return Err(refused(&ip.to_string()));
            }
            Some(url::Host::Domain(name)) if !self.allow_private => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(refused(&name));
                }
            }
            _ => {}
        }
        Ok(url)
    }

    /// [`check_url`](Self::check_url), then the host name resolved: refused when any address
    /// is refused, or when it resolves to none.
    pub async fn check_target(&self, raw: &str) -> Result<url::Url, TargetError> {
        let url = self.check_url(raw)?;
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let unresolvable = || TargetError::Unresolvable {
                host: name.to_owned(),
            };
            let addrs: Vec<SocketAddr> =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                    .await
                    .map_err(|_| unresolvable())?
                    .map_err(|_| unresolvable())?
                    .collect();
            if addrs.is_empty() {
                return Err(unresolvable());
            }
            if addrs.iter().any(|a| !self.allows(a.ip())) {
                return Err(TargetError::PrivateAddress {
                    host: name.to_owned(),
                });
            }
        }
        Ok(url)
    }

    /// Whether a webhook may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// A resolver for the delivering HTTP client that drops every address the policy refuses
    /// (and fails when none is left), so a name that resolved to a public address at
    /// registration cannot later lead to an internal one.
    pub fn resolver(&self) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver { policy: *self })
    }
}

/// A globally routable unicast address: not loopback, private (RFC 1918, ULA), link-local
/// (incl. 169.254.169.254), unspecified, shared (CGNAT 100.64/10), multicast, broadcast,
/// documentation, benchmarking or reserved — also when written as IPv4-mapped, -compatible,
/// NAT64 or 6to4 IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0                                  // 0.0.0.0/8 "this network"
        || ip.is_loopback()                        // 127/8
        || ip.is_private()                         // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                      // 169.254/16 (cloud metadata)
        || (a == 100 && (64..=127).contains(&b))   // 100.64/10 shared (CGNAT)
        || (a == 192 && b == 0 && c == 0)          // 192.0.0/24 protocol assignments
        || (a == 192 && b == 0 && c == 2)          // documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19))      // 198.18/15 benchmarking
        || ip.is_multicast()                       // 224/4
        || a >= 240) // 240/4 reserved, 255.255.255.255 broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // ::a.b.c.d (deprecated IPv4-compatible) and NAT64 64:ff9b::/96 carry an IPv4 address.
    if (s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return is_public_v4(v4);
    }
    // 6to4 2002::/16 embeds one in its next 32 bits.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00   // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80   // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0   // fec0::/10 site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00   // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0)) // Teredo (embeds an obfuscated IPv4 address)
}

/// The delivering client's DNS resolver (see [`TargetPolicy::resolver`]).
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: TargetPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = resolved.filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(TargetError::PrivateAddress { host })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Prefix of a signing secret as shown to the user.
pub const SECRET_PREFIX: &str = "whsec_";

const SECRET_KEYRING: KeyringSettings = KeyringSettings {
    keys_setting: "WEBHOOK_SECRET_KEYS",
    key_id_setting: "WEBHOOK_SECRET_KEY_ID",
    // The 32 ASCII bytes `gcal-webhook-secrets-DEV-ONLY!!!`: public, for local use only.
    default_keys: "dev:Z2NhbC13ZWJob29rLXNlY3JldHMtREVWLU9OTFkhISE=",
    default_key_id: "dev",
    keys_description: "Comma-separated `keyId:base64key` entries (32 random bytes each, `openssl rand -base64 32`) that encrypt stored webhook signing secrets; keep retired keys listed until no endpoint uses them. The default is a public development key: set your own.",
    key_id_description: "Id of the key in WEBHOOK_SECRET_KEYS that encrypts new webhook secrets.",
    purpose: "gcal-connector/webhook-secret/v1",
};

/// Webhook signing secrets: generated, encrypted for storage, decrypted to sign.
#[derive(Debug, Clone)]
pub struct WebhookSecrets {
    keyring: Keyring,
}

impl WebhookSecrets {
    /// Reads `WEBHOOK_SECRET_KEYS` and `WEBHOOK_SECRET_KEY_ID`.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            keyring: Keyring::from_env(env, &SECRET_KEYRING),
        }
    }

    /// Whether the public development key is configured (the service warns at start-up).
    pub fn uses_dev_key(&self) -> bool {
        self.keyring.uses_dev_key()
    }

    /// A new secret: `whsec_` and 32 random bytes in unpadded base64url. The HMAC key is this
    /// whole string as UTF-8.
    pub fn generate() -> Zeroizing<String> {
        let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
        Zeroizing::new(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(*bytes)))
    }

    /// Encrypts `secret` for the endpoint `endpoint_id` of `subaccount`.
    pub fn seal(&self, secret: &str, subaccount: &str, endpoint_id: &str) -> EncryptedToken {
        self.keyring
            .seal(secret.as_bytes(), &[subaccount, endpoint_id])
    }

    /// Decrypts the stored secret of the endpoint `endpoint_id` of `subaccount`.
    pub fn open(
        &self,
        sealed: &EncryptedToken,
        subaccount: &str,
        endpoint_id: &str,
    ) -> Result<Zeroizing<String>, OpenError> {
        self.keyring.open_string(sealed, &[subaccount, endpoint_id])
    }
}

/// Tells every metadata-worker replica's endpoint registry that the subaccount's endpoints
/// changed: sets its change mark to a new value. Call it after the change is stored. Best
/// effort: when Redis does not take it the change reaches the fan-out within
/// [`ENDPOINT_REGISTRY_TTL`], and the warning logged says so.
pub async fn endpoints_changed(
    redis: &crate::redis::RedisConnection,
    keys: &crate::redis::RedisKeys,
    subaccount: &schemas::SubaccountId,
) {
    let mut redis = redis.clone();
    let key = keys.webhook_endpoints_mark(subaccount);
    let marked = crate::redis::mark_changed(&mut redis, &key);
    let failure = match tokio::time::timeout(CHANGE_MARK_TIMEOUT, marked).await {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {CHANGE_MARK_TIMEOUT:?}"),
    };
    tracing::warn!(
        error = %failure,
        "webhook endpoints' change mark not set; the metadata-worker may announce events to the old endpoints for up to {}s",
        ENDPOINT_REGISTRY_TTL.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> TargetPolicy {
        TargetPolicy::default()
    }

    #[test]
    fn non_public_addresses_are_refused_in_every_spelling() {
        for url in [
            "https://127.0.0.1/",
            "https://127.1.2.3:8443/x",
            "https://10.0.0.5/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://255.255.255.255/",
            "https://224.0.0.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[fc00::1]/",
            "https://[fd12:3456::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:7f00:1::]/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
        ] {
            assert!(
                matches!(
                    strict().check_url(url),
                    Err(TargetError::PrivateAddress { .. })
                ),
                "{url}: {:?}",
                strict().check_url(url)
            );
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn scheme_and_credentials_are_checked_and_knobs_relax_them() {
        assert_eq!(
            strict().check_url("http://example.com/"),
            Err(TargetError::NotHttps)
        );
        assert_eq!(
            strict().check_url("ftp://example.com/"),
            Err(TargetError::UnsupportedScheme)
        );
        assert_eq!(
            strict().check_url("https://u:p@example.com/"),
            Err(TargetError::Credentials)
        );
        assert!(matches!(
            strict().check_url("not a url"),
            Err(TargetError::Malformed(_))
        ));
        assert!(strict().check_url("https://example.com/hook").is_ok());
        let open = TargetPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert!(open.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(open.check_url("http://localhost/").is_ok());
    }

    #[test]
    fn secrets_round_trip_and_are_bound_to_their_endpoint() {
        let secrets =
            WebhookSecrets::from_env(&mut Env::from_pairs(Vec::<(String, String)>::new()));
        assert!(secrets.uses_dev_key());
        let secret = WebhookSecrets::generate();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 43);
        let sealed = secrets.seal(&secret, "sub", "ep1");
        assert_eq!(
            *secrets.open(&sealed, "sub", "ep1").expect("opens"),
            *secret
        );
        assert!(secrets.open(&sealed, "sub", "ep2").is_err());
        assert_ne!(*WebhookSecrets::generate(), *secret);
    }
}
