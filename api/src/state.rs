//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use service_kit::Infrastructure;
use service_kit::auth::JwtVerifier;

use crate::connectors::ConnectorStore;
use crate::extract::BodyLimit;
use crate::service_auth::ServiceTokenVerifier;

/// Cloned for every request by axum's `State`, so it is one `Arc`: a single reference count
/// instead of one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub infra: Infrastructure,
    /// Read by the `AuthenticatedUser` extractor.
    pub verifier: JwtVerifier,
    pub connectors: ConnectorStore,
    /// `CONNECT_REQUEST_TIMEOUT`.
    pub connect_timeout: Duration,
    /// Read by the `ApiJson` extractor for its 413 message.
    pub body_limit: BodyLimit,
    /// Read by the `ServiceCaller` extractor.
    pub service_tokens: ServiceTokenVerifier,
    /// `API_PUBLISH_TIMEOUT`.
    pub publish_timeout: Duration,
    /// `WEBHOOK_*`: what the webhook routes check and encrypt with.
    pub webhooks: crate::config::WebhookSettings,
    /// `API_DEV_MODE` and what the try-it page's helpers need.
    pub try_it: crate::try_it::TryItConfig,
    /// The api's per-caller rate limits.
    pub limiter: crate::limits::Limiter,
    /// Issues the links that are not emailed, once it learned the worker's settings.
    pub local_links: crate::local_links::LocalLinks,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for JwtVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        state.body_limit
    }
}

impl FromRef<AppState> for ServiceTokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.service_tokens.clone()
    }
}
