//! What every handler can reach.

use std::time::Duration;

use axum::extract::FromRef;
use service_kit::Infrastructure;
use service_kit::auth::JwtVerifier;

use crate::connectors::ConnectorStore;
use crate::extract::BodyLimit;

#[derive(Debug, Clone)]
pub struct AppState {
    pub infra: Infrastructure,
    /// Read by the `AuthenticatedUser` extractor.
    pub verifier: JwtVerifier,
    pub connectors: ConnectorStore,
    /// `CONNECT_REQUEST_TIMEOUT`.
    pub connect_timeout: Duration,
    /// Read by the `ApiJson` extractor for its 413 message.
    pub body_limit: BodyLimit,
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
