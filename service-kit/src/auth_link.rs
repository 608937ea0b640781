//! Building the provider's authorization URL with the `oauth2` crate: a fresh single-use
//! `state` and a PKCE S256 pair for every link. One code for both issuers of links: the
//! oauth-worker (emailed links, and every link while the api has no link settings) and the api
//! (links returned to the caller, `api/src/local_links.rs`). The client only needs its id, the
//! authorization endpoint and the redirect URI: the client secret is not part of a link, and
//! the api's client has none.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, ClientId, CsrfToken, EndpointNotSet, EndpointSet, EndpointState, PkceCodeChallenge,
    RedirectUrl, Scope,
};
use schemas::events::ProviderProfile;

/// An oauth2 client that can build authorization URLs, whatever else it has set (`TokenUrl`:
/// the oauth-worker's client also exchanges codes).
pub type LinkClient<TokenUrl = EndpointNotSet> =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, TokenUrl>;

/// Bytes of randomness in a `state`: 256 bits from the OS CSPRNG (the issue asks ≥ 128).
const STATE_BYTES: u32 = 32;

/// A client with no secret and no token endpoint: all a link needs.
pub fn link_client(client_id: &str, auth_url: url::Url, redirect_uri: url::Url) -> LinkClient {
    BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_auth_uri(AuthUrl::from_url(auth_url))
        .set_redirect_uri(RedirectUrl::from_url(redirect_uri))
}

/// A link ready to hand out, with the secrets the callback will need.
#[derive(Debug)]
pub struct IssuedLink {
    pub url: url::Url,
    /// Single-use key of the pending attempt; also in the URL.
    pub state: String,
    /// The PKCE verifier; never leaves the issuer and Redis.
    pub pkce_verifier: String,
}

/// The scope that asks an OpenID provider for a refresh token (OIDC Core §11).
pub const OFFLINE_ACCESS: &str = "offline_access";

/// A new authorization URL for `login_hint`: `response_type=code`, client id, redirect URI,
/// scopes, `login_hint`, `state`, the S256 code challenge, and offline access asked the
/// profile's way so that a refresh token is issued: Google's `access_type=offline` (with
/// `include_granted_scopes=true`), or OIDC's `offline_access` scope. Both add
/// `prompt=consent`: Google issues a second refresh token only then, and OIDC Core §11 wants
/// it for `offline_access`.
pub fn issue_link<T: EndpointState>(
    client: &LinkClient<T>,
    profile: ProviderProfile,
    scopes: &[String],
    login_hint: &str,
) -> IssuedLink {
    build_link(client, profile, scopes, Some(login_hint), "consent")
}

/// A link for another try of an attempt whose Google account `CONSENT_ACCOUNT_POLICY`
/// refused: as [`issue_link`], with `prompt=select_account consent` so the provider offers
/// its account chooser instead of reusing the account the browser is signed in with, and
/// `login_hint` only when there is one account to suggest.
pub fn issue_retry_link<T: EndpointState>(
    client: &LinkClient<T>,
    profile: ProviderProfile,
    scopes: &[String],
    login_hint: Option<&str>,
) -> IssuedLink {
    build_link(
        client,
        profile,
        scopes,
        login_hint,
        "select_account consent",
    )
}

fn build_link<T: EndpointState>(
    client: &LinkClient<T>,
    profile: ProviderProfile,
    scopes: &[String],
    login_hint: Option<&str>,
    prompt: &str,
) -> IssuedLink {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(|| CsrfToken::new_random_len(STATE_BYTES))
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .set_pkce_challenge(challenge)
        .add_extra_param("prompt", prompt.to_owned());
    if let Some(login_hint) = login_hint {
        request = request.add_extra_param("login_hint", login_hint.to_owned());
    }
    let request = match profile {
        ProviderProfile::Google => request
            .add_extra_param("access_type", "offline")
            .add_extra_param("include_granted_scopes", "true"),
        ProviderProfile::Oidc if scopes.iter().any(|s| s == OFFLINE_ACCESS) => request,
        ProviderProfile::Oidc => request.add_scope(Scope::new(OFFLINE_ACCESS.to_owned())),
    };
    let (url, state) = request.url();
    IssuedLink {
        url,
        state: state.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SCOPES: &str = "https://www.googleapis.com/auth/calendar openid email";

    fn client() -> LinkClient {
        link_client(
            "client-1",
            "https://accounts.example/o/oauth2/v2/auth"
                .parse()
                .expect("url"),
            "http://127.0.0.1:3004/api/google/callback"
                .parse()
                .expect("url"),
        )
    }

    fn scopes() -> Vec<String> {
        SCOPES.split(' ').map(str::to_owned).collect()
    }

    fn query(link: &IssuedLink) -> HashMap<String, String> {
        link.url.query_pairs().into_owned().collect()
    }

    #[test]
    fn link_carries_every_parameter_the_flow_needs() {
        let link = issue_link(
            &client(),
            ProviderProfile::Google,
            &scopes(),
            "user@example.com",
        );
        assert!(
            link.url
                .as_str()
                .starts_with("https://accounts.example/o/oauth2/v2/auth?")
        );
        let q = query(&link);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client-1");
        assert_eq!(
            q["redirect_uri"],
            "http://127.0.0.1:3004/api/google/callback"
        );
        assert_eq!(q["scope"], SCOPES);
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["include_granted_scopes"], "true");
        assert_eq!(q["login_hint"], "user@example.com");
        assert_eq!(q["state"], link.state);
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(
            !link.url.as_str().contains(&link.pkce_verifier),
            "verifier in URL"
        );
        // S256: the challenge is base64url(sha256(verifier)), 43 characters.
        assert_eq!(q["code_challenge"].len(), 43);
    }

    #[test]
    fn retry_links_offer_the_account_chooser() {
        let client = client();
        let link = issue_retry_link(
            &client,
            ProviderProfile::Google,
            &scopes(),
            Some("user@example.com"),
        );
        let q = query(&link);
        assert_eq!(q["prompt"], "select_account consent");
        assert_eq!(q["login_hint"], "user@example.com");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["state"], link.state);
        let link = issue_retry_link(&client, ProviderProfile::Google, &scopes(), None);
        assert!(!link.url.as_str().contains("login_hint"), "{}", link.url);
    }

    #[test]
    fn states_are_long_random_and_distinct() {
        let client = client();
        let a = issue_link(&client, ProviderProfile::Google, &scopes(), "a@example.com");
        let b = issue_link(&client, ProviderProfile::Google, &scopes(), "a@example.com");
        assert_ne!(a.state, b.state);
        assert_ne!(a.pkce_verifier, b.pkce_verifier);
        // 32 bytes, base64url without padding.
        assert_eq!(a.state.len(), 43);
    }

    #[test]
    fn the_oidc_profile_asks_offline_access_by_scope_not_the_google_way() {
        let link = issue_link(
            &client(),
            ProviderProfile::Oidc,
            &scopes(),
            "user@example.com",
        );
        let q = query(&link);
        assert_eq!(q["scope"], format!("{SCOPES} offline_access"));
        assert_eq!(q["prompt"], "consent");
        assert!(!q.contains_key("access_type"), "{q:?}");
        assert!(!q.contains_key("include_granted_scopes"), "{q:?}");
        assert_eq!(q["login_hint"], "user@example.com");

        // Configured already: not asked twice.
        let mut with_offline = scopes();
        with_offline.push(OFFLINE_ACCESS.to_owned());
        let link = issue_link(
            &client(),
            ProviderProfile::Oidc,
            &with_offline,
            "user@example.com",
        );
        assert_eq!(query(&link)["scope"].matches(OFFLINE_ACCESS).count(), 1);
    }
}
