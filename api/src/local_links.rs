//! Authorization links the api issues itself: those it returns to the caller without an email
//! (`sendEmail: false`). Issuing one is building the URL (state, PKCE pair) and storing the
//! pending attempt in Redis under the connect limits: the oauth-worker's
//! [`service_kit::auth_link`] and [`service_kit::oauth_state`] code, run here, so the request
//! does not wait for a NATS round trip to the worker as well as the Redis one.
//!
//! What the api must know for it, the worker tells it: a connect request the api sends while
//! it holds no settings (or settings older than `LINK_SETTINGS_TTL`) carries
//! `Gcal-Link-Settings-Wanted`, and the worker's `Issued` reply carries its
//! [`LinkSettings`]: client id, authorization endpoint, redirect URI, scopes, profile, state
//! TTL, state-store timeout, `REDIS_WAIT_REPLICAS` and the connect limits. So the api has no
//! provider settings of its own to keep in step, a change of the worker's reaches it within the
//! TTL, and a worker of an earlier version (which ignores the header) leaves every link to the
//! worker. Nothing is weaker than the worker's links: the same state and PKCE pair from the
//! OS CSPRNG, the same Lua script deciding every limit with the store, and no client secret
//! (a link has none; the api's client has none).
//!
//! Emailed links stay with the oauth-worker: it owns the outbox that keeps an email job while
//! JetStream cannot take it, and with it the promise behind `emailSent: true`.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use schemas::SubaccountId;
use schemas::events::{ConnectRequested, LinkSettings};
use service_kit::Infrastructure;
use service_kit::auth_link::{LinkClient, issue_link, link_client};
use service_kit::oauth_state::{PendingAttempt, Put, StateStore};
use service_kit::rate_limit::ConnectLimits;
use uuid::Uuid;

use crate::error::ApiError;
use crate::oauth_worker::AuthLink;

/// The api's link issuer, with the settings it last learned from the oauth-worker.
#[derive(Debug)]
pub struct LocalLinks {
    /// `LINK_SETTINGS_TTL`; zero: every link comes from the oauth-worker.
    ttl: Duration,
    infra: Infrastructure,
    current: RwLock<Option<Arc<Issuer>>>,
}

/// Issues links with one set of learned settings.
#[derive(Debug)]
pub struct Issuer {
    learned: Instant,
    settings: LinkSettings,
    client: LinkClient,
    states: StateStore,
}

/// Why learned settings were not taken.
#[derive(Debug, thiserror::Error)]
pub enum UnusableSettings {
    #[error("{0} is not an http(s) URL")]
    Url(&'static str),
    #[error("the limits make no sense")]
    Limits,
    #[error("the state TTL or the state store's timeout is out of range")]
    Durations,
}

impl LocalLinks {
    pub fn new(ttl: Duration, infra: Infrastructure) -> Self {
        Self {
            ttl,
            infra,
            current: RwLock::new(None),
        }
    }

    /// The issuer, while its settings are younger than `LINK_SETTINGS_TTL`.
    pub fn issuer(&self) -> Option<Arc<Issuer>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|issuer| issuer.learned.elapsed() < self.ttl)
            .cloned()
    }

    /// Whether a request to the oauth-worker should ask for its link settings.
    pub fn wanted(&self) -> bool {
        !self.ttl.is_zero() && self.issuer().is_none()
    }

    /// Takes settings the oauth-worker sent. Settings that cannot be used (which a worker of
    /// this version never sends) are logged and leave every link to the worker.
    pub fn learn(&self, settings: &LinkSettings) {
        if self.ttl.is_zero() {
            return;
        }
        let issuer = match Issuer::new(settings, &self.infra) {
            Ok(issuer) => Some(Arc::new(issuer)),
            Err(error) => {
                tracing::error!(%error, "the oauth-worker's link settings are unusable; every link is asked of the oauth-worker");
                None
            }
        };
        let changed = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            current.as_ref().map(|c| &c.settings) != Some(settings)
        };
        if changed && issuer.is_some() {
            tracing::info!(
                "link settings learned from the oauth-worker; links returned without an email are issued here"
            );
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = issuer;
    }
}

/// Learned settings, checked.
struct Checked {
    auth_url: url::Url,
    redirect_uri: url::Url,
    limits: ConnectLimits,
    ttl: Duration,
    timeout: Duration,
}

/// The settings the api can issue links with: http(s) endpoints, sane limits, the TTL and
/// timeout in the ranges the oauth-worker's own settings allow.
fn check(settings: &LinkSettings) -> Result<Checked, UnusableSettings> {
    let http_url = |raw: &str, what| {
        url::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or(UnusableSettings::Url(what))
    };
    let ttl = Duration::from_millis(settings.state_ttl_ms);
    let timeout = Duration::from_millis(settings.state_store_timeout_ms);
    let sane_ttl = (Duration::from_secs(60)..=Duration::from_secs(24 * 3600)).contains(&ttl);
    let sane_timeout = (Duration::from_millis(10)..=Duration::from_secs(5)).contains(&timeout);
    if !sane_ttl || !sane_timeout {
        return Err(UnusableSettings::Durations);
    }
    Ok(Checked {
        auth_url: http_url(&settings.auth_url, "the authorization endpoint")?,
        redirect_uri: http_url(&settings.redirect_uri, "the redirect URI")?,
        limits: ConnectLimits::from_spec(&settings.limits).ok_or(UnusableSettings::Limits)?,
        ttl,
        timeout,
    })
}

impl Issuer {
    fn new(settings: &LinkSettings, infra: &Infrastructure) -> Result<Self, UnusableSettings> {
        let checked = check(settings)?;
        let states = StateStore::new(
            infra.redis.clone(),
            infra.keys.clone(),
            checked.ttl,
            checked.limits,
            checked.timeout,
        )
        .waiting_for_replicas(settings.wait_replicas);
        Ok(Self {
            learned: Instant::now(),
            settings: settings.clone(),
            client: link_client(&settings.client_id, checked.auth_url, checked.redirect_uri),
            states,
        })
    }

    /// Issues a link for a request that is not emailed: as the oauth-worker would, answering
    /// 429 when a limit refuses it and 503 when the state cannot be stored (nothing stored or
    /// charged either way).
    pub async fn issue(
        &self,
        subaccount: &SubaccountId,
        correlation_id: Uuid,
        request: &ConnectRequested,
    ) -> Result<AuthLink, ApiError> {
        let started = Instant::now();
        let link = issue_link(
            &self.client,
            self.settings.profile,
            &self.settings.scopes,
            request.user_email.as_str(),
        );
        let auth_url = link.url.to_string();
        let issued_at = Utc::now();
        let expires_at = issued_at + self.states.ttl();
        let attempt = PendingAttempt {
            subaccount_id: subaccount.clone(),
            user_email: request.user_email.clone(),
            pkce_verifier: link.pkce_verifier,
            correlation_id,
            issued_at,
            traceparent: service_kit::telemetry::current_traceparent(),
            expires_at: Some(expires_at),
            auth_url: Some(auth_url.clone()),
            tenant_name: request.tenant_name.clone(),
        };
        let stored = self.states.put(&link.state, &attempt, false).await;
        metrics::histogram!("auth_url_duration_seconds").record(started.elapsed().as_secs_f64());
        let outcome = match stored {
            Ok(Put::Stored) => Ok(AuthLink {
                auth_url,
                expires_at,
                email_sent: false,
                settings: None,
            }),
            Ok(Put::Limited { limit, retry_after }) => {
                tracing::info!(
                    limit = limit.name(),
                    ?retry_after,
                    "connect request over a limit; no link issued"
                );
                Err(ApiError::RateLimited {
                    limit: limit.name(),
                    rule: self.states.limits().describe(limit),
                    retry_after,
                })
            }
            Err(error) => {
                tracing::error!(%error, "cannot store the OAuth state; no link issued");
                Err(ApiError::StateStoreUnavailable)
            }
        };
        let label = match &outcome {
            Ok(_) => "issued",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(_) => "state_store_unavailable",
        };
        metrics::counter!("connect_requests_total", "outcome" => label, "issuer" => "api")
            .increment(1);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use schemas::events::{LinkLimits, ProviderProfile, RateSpec};

    use super::*;

    fn settings() -> LinkSettings {
        let rate = RateSpec {
            count: 60,
            period_ms: 60_000,
        };
        LinkSettings {
            client_id: "client-1".into(),
            auth_url: "https://accounts.example/o/oauth2/v2/auth".into(),
            redirect_uri: "http://127.0.0.1:3004/api/google/callback".into(),
            scopes: vec!["openid".into(), "email".into()],
            profile: ProviderProfile::Google,
            state_ttl_ms: 600_000,
            state_store_timeout_ms: 1000,
            wait_replicas: 0,
            limits: LinkLimits {
                connect_per_subaccount: rate,
                emails_per_subaccount: rate,
                emails_per_recipient: rate,
                live_states_per_subaccount: 200,
            },
        }
    }

    #[test]
    fn settings_a_worker_would_never_send_are_refused() {
        let cases: Vec<(LinkSettings, &str)> = vec![
            (
                LinkSettings {
                    auth_url: "javascript:alert(1)".into(),
                    ..settings()
                },
                "authorization endpoint",
            ),
            (
                LinkSettings {
                    redirect_uri: "not a url".into(),
                    ..settings()
                },
                "redirect URI",
            ),
            (
                LinkSettings {
                    state_ttl_ms: 0,
                    ..settings()
                },
                "TTL",
            ),
            (
                LinkSettings {
                    state_store_timeout_ms: 60_000,
                    ..settings()
                },
                "timeout",
            ),
            (
                LinkSettings {
                    limits: LinkLimits {
                        live_states_per_subaccount: 0,
                        ..settings().limits
                    },
                    ..settings()
                },
                "limits",
            ),
        ];
        for (bad, what) in cases {
            match check(&bad) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => assert!(e.to_string().contains(what), "{what}: {e}"),
            }
        }
        assert!(check(&settings()).is_ok(), "the usual settings are usable");
    }
}
