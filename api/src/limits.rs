//! The api's own rate limits, per caller, shared by every replica through Redis
//! ([`service_kit::rate_limit`]). The connect request's limits (per subaccount, per recipient,
//! live states) are decided by the oauth-worker when it stores the OAuth state; the api only
//! charges connect requests for a connector that does not exist to the same per-subaccount
//! budget, since those never reach the oauth-worker.
//!
//! When Redis cannot decide within `RATE_LIMIT_TIMEOUT`, these limits let the request through
//! (fail open), log it and count `rate_limit_unavailable_total{limit}`: each of them guards a
//! route whose work is bounded elsewhere (a MongoDB write behind authentication, a dev helper),
//! and refusing every caller because the limiter is down would turn a Redis outage into an
//! outage of those routes. The limits that guard email and stored state fail closed, in the
//! oauth-worker: without Redis no link can be issued at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::auth::UserClaims;
use service_kit::config::Env;
use service_kit::rate_limit::{self, Check, Decision, Limit, RateLimiter};

use crate::error::ApiError;
use crate::state::AppState;

/// The api's limits, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
    /// Shared with the oauth-worker; charged here only for connectors that do not exist.
    pub connect_per_subaccount: Limit,
    /// The deprecated metadata update, per calling service.
    pub metadata_update_per_caller: Limit,
    /// Webhook endpoint management (register, list, delete, delivery log), per user.
    pub webhook_management_per_caller: Limit,
    /// The try-it page and its `/dev/...` helpers (with `API_DEV_MODE`), per client address.
    pub dev_per_client: Limit,
    /// How long a decision may wait for Redis.
    pub timeout: Duration,
}

impl ApiLimits {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            connect_per_subaccount: rate_limit::connect_per_subaccount(env),
            metadata_update_per_caller: Limit {
                name: "metadata_update_per_caller",
                rate: env.value(
                    "RATE_LIMIT_METADATA_UPDATE_PER_CALLER",
                    "120/1m",
                    "Deprecated metadata updates one calling service may make, as `count/period`.",
                ),
            },
            webhook_management_per_caller: Limit {
                name: "webhook_management_per_caller",
                rate: env.value(
                    "RATE_LIMIT_WEBHOOK_MANAGEMENT_PER_CALLER",
                    "60/1m",
                    "Webhook endpoint requests (register, list, delete, deliveries) one user may \
                     make, as `count/period`.",
                ),
            },
            dev_per_client: Limit {
                name: "dev_per_client",
                rate: env.value(
                    "RATE_LIMIT_DEV_PER_CLIENT",
                    "120/1m",
                    "Requests to the try-it page and its `/dev/...` helpers (API_DEV_MODE only) \
                     one client address may make, as `count/period`.",
                ),
            },
            timeout: rate_limit::limiter_timeout(env),
        }
    }
}

/// The api's limiter and its limits.
#[derive(Debug, Clone)]
pub struct Limiter {
    pub limits: ApiLimits,
    limiter: RateLimiter,
}

impl Limiter {
    pub fn new(limits: ApiLimits, infra: &service_kit::Infrastructure) -> Self {
        Self {
            limiter: RateLimiter::new(infra.redis.clone(), infra.keys.clone(), limits.timeout),
            limits,
        }
    }

    /// Charges one request to `limit` for `subject`: `Err` 429 when over it; through (logged
    /// and counted) when Redis cannot decide.
    pub async fn charge(&self, limit: &Limit, subject: &str) -> Result<(), ApiError> {
        match self.limiter.check(&[Check { limit, subject }]).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited {
                limit: name,
                retry_after,
            }) => {
                // In the request's span: path and request id say who and what.
                tracing::info!(
                    limit = name,
                    ?retry_after,
                    "request over a limit; answering 429"
                );
                Err(ApiError::RateLimited {
                    limit: name,
                    rule: format!("at most {}", limit.rate.describe()),
                    retry_after,
                })
            }
            Err(unavailable) => {
                rate_limit::count_unavailable(limit.name);
                tracing::warn!(limit = limit.name, error = %unavailable, "rate limit not decided; letting the request through");
                Ok(())
            }
        }
    }

    /// [`Self::charge`] to the webhook management limit of `user`.
    pub async fn webhook_management(&self, user: &UserClaims) -> Result<(), ApiError> {
        self.charge(
            &self.limits.webhook_management_per_caller,
            &caller_subject(user),
        )
        .await
    }
}

/// A user, as a limit subject: issuer and subject together (two identity providers may both
/// have a user `42`), digested so any characters are safe in a key.
pub fn caller_subject(user: &UserClaims) -> String {
    rate_limit::subject_digest(&format!(
        "{}\u{0}{}",
        user.iss.as_deref().unwrap_or_default(),
        user.sub
    ))
}

/// The client's address as the socket saw it (never a forwarded header, which the client
/// writes): IPv4 whole, IPv6 by its /64, the block one host is usually given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    pub fn subject(&self) -> String {
        match self.0.map(canonical) {
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            None => "unknown".to_owned(),
        }
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// axum middleware for the try-it routes: each request is charged to the client's
/// `dev_per_client` budget.
pub async fn dev_per_client(
    State(state): State<AppState>,
    client: ClientAddr,
    request: Request,
    next: Next,
) -> Response {
    let limiter = &state.limiter;
    match limiter
        .charge(&limiter.limits.dev_per_client, &client.subject())
        .await
    {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let limits = ApiLimits::from_env(&mut env);
        env.finish().expect("defaults parse");
        assert_eq!(limits.connect_per_subaccount.rate.count, 60);
        assert_eq!(limits.metadata_update_per_caller.rate.count, 120);
        assert_eq!(limits.webhook_management_per_caller.rate.count, 60);
        assert_eq!(limits.dev_per_client.rate.count, 120);
        let names: std::collections::HashSet<_> = [
            &limits.connect_per_subaccount,
            &limits.metadata_update_per_caller,
            &limits.webhook_management_per_caller,
            &limits.dev_per_client,
        ]
        .iter()
        .map(|l| l.name)
        .collect();
        assert_eq!(names.len(), 4, "names are distinct");
    }

    #[test]
    fn clients_are_told_apart_by_address_and_ipv6_by_its_64() {
        let v4 = ClientAddr(Some("192.0.2.7".parse().expect("ip")));
        assert_eq!(v4.subject(), "192.0.2.7");
        let mapped = ClientAddr(Some("::ffff:192.0.2.7".parse().expect("ip")));
        assert_eq!(mapped.subject(), "192.0.2.7");
        let a = ClientAddr(Some("2001:db8:1:2:aaaa::1".parse().expect("ip")));
        let b = ClientAddr(Some("2001:db8:1:2:bbbb::9".parse().expect("ip")));
        let c = ClientAddr(Some("2001:db8:1:3::1".parse().expect("ip")));
        assert_eq!(a.subject(), b.subject());
        assert_ne!(a.subject(), c.subject());
        assert_eq!(ClientAddr(None).subject(), "unknown");
    }

    #[test]
    fn callers_of_two_issuers_are_two_callers() {
        let user = |iss: Option<&str>, sub: &str| UserClaims {
            sub: sub.to_owned(),
            subaccount_ids: Vec::new(),
            roles: Vec::new(),
            permissions: Vec::new(),
            email: None,
            iss: iss.map(str::to_owned),
            aud: None,
            exp: 0,
            nbf: None,
            iat: None,
        };
        assert_ne!(
            caller_subject(&user(Some("a"), "42")),
            caller_subject(&user(Some("b"), "42"))
        );
        assert_eq!(
            caller_subject(&user(None, "42")),
            caller_subject(&user(None, "42"))
        );
    }
}
