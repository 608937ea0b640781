//! What the fake remembers between requests: consents in progress, codes, grants and tokens.
//!
//! A *grant* is what one redeemed code produced: an account's consent to a client for some
//! scopes, its refresh token (offline access only) and every access token minted from either.
//! Revoking any token of a grant revokes the grant — all of its tokens — as Google does.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::faults::Faults;
use super::modes::Modes;
use super::random_token;

/// How long an authorization code can be redeemed (Google: 10 minutes).
pub(super) const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Google's `expires_in` for a fresh access token.
pub(super) const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

#[derive(Debug, Default)]
pub(super) struct State {
    /// Authorization requests shown on a consent page and not yet answered, by their id.
    pub pending: HashMap<String, PendingConsent>,
    pub codes: HashMap<String, IssuedCode>,
    /// Indexed by grant id; grants are never removed, only revoked.
    pub grants: Vec<Grant>,
    pub access_tokens: HashMap<String, AccessToken>,
    /// Refresh token → grant id.
    pub refresh_tokens: HashMap<String, usize>,
    pub faults: Faults,
    pub modes: Modes,
    pub counters: Counters,
}

/// An authorization request that passed validation and waits for the user's decision.
#[derive(Debug, Clone)]
pub(super) struct PendingConsent {
    pub client_id: String,
    pub redirect_uri: String,
    /// As requested, in order, without duplicates.
    pub scopes: Vec<String>,
    pub state: Option<String>,
    /// What the account field is prefilled with: `login_hint`, else the default account.
    pub account: String,
    pub access_type: Option<String>,
    pub prompt: Option<String>,
    pub include_granted_scopes: bool,
    pub code_challenge: String,
}

#[derive(Debug)]
pub(super) struct IssuedCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub account: String,
    pub scopes: Vec<String>,
    pub offline: bool,
    /// Whether the user was asked to consent again (`prompt=consent`).
    pub forced_consent: bool,
    pub issued_at: Instant,
    /// The grant it produced, once redeemed: a second redemption revokes it.
    pub redeemed: Option<usize>,
}

#[derive(Debug)]
pub(super) struct Grant {
    pub client_id: String,
    pub account: String,
    pub scopes: Vec<String>,
    pub refresh_token: Option<String>,
    pub revoked: bool,
}

#[derive(Debug)]
pub(super) struct AccessToken {
    pub grant: usize,
    pub expires_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Every request that reached the token endpoint, by its `grant_type` (`""` when missing),
    /// including those answered with an injected failure.
    pub token_requests: BTreeMap<String, usize>,
    pub revoke_requests: usize,
    /// Revocation requests refused with `invalid_client`.
    pub revoke_requests_unauthenticated: usize,
    pub issued_access_tokens: usize,
    /// Refresh-token grants per account, counted for every refresh token issued here
    /// (revoked ones included), whatever the answer: how often the client refreshed.
    pub refresh_requests_by_account: BTreeMap<String, usize>,
}

impl State {
    /// Mints an access token for `grant`, returning it with its lifetime.
    pub fn mint_access_token(&mut self, grant: usize) -> (String, Duration) {
        let lifetime = self
            .faults
            .access_token_lifetime
            .unwrap_or(DEFAULT_ACCESS_TOKEN_LIFETIME);
        let token = format!("ya29.a0{}", random_token(48));
        self.access_tokens.insert(
            token.clone(),
            AccessToken {
                grant,
                expires_at: Instant::now() + lifetime,
            },
        );
        self.counters.issued_access_tokens += 1;
        (token, lifetime)
    }

    /// The grant behind a usable access token: known, unexpired, not revoked.
    pub fn live_access_grant(&self, token: &str) -> Option<&Grant> {
        let access = self.access_tokens.get(token)?;
        let grant = &self.grants[access.grant];
        (access.expires_at > Instant::now() && !grant.revoked).then_some(grant)
    }

    /// The grant id of any token, access or refresh, whatever its state.
    pub fn grant_of(&self, token: &str) -> Option<usize> {
        self.access_tokens
            .get(token)
            .map(|access| access.grant)
            .or_else(|| self.refresh_tokens.get(token).copied())
    }

    /// Grants of `account` to `client_id` that are still valid.
    pub fn live_grants<'a>(
        &'a self,
        client_id: &'a str,
        account: &'a str,
    ) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .iter()
            .filter(move |g| !g.revoked && g.client_id == client_id && g.account == account)
    }
}

/// Google's `sub`: a stable numeric id per account, the same in every run.
pub(super) fn subject_of(account: &str) -> String {
    let digest = Sha256::digest(account.to_ascii_lowercase().as_bytes());
    let mut id = String::from("1");
    for byte in digest.iter().take(20) {
        id.push(char::from(b'0' + byte % 10));
    }
    id
}

/// The PKCE S256 transformation: base64url-no-pad of SHA-256 of the verifier.
pub(super) fn s256(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}
