//! The worker's OAuth client: the link client of [`service_kit::auth_link`] with the client
//! secret and the token endpoint, so the same client that builds links also exchanges codes.

use oauth2::{AuthType, ClientSecret, EndpointSet, TokenUrl};
use service_kit::auth_link::{LinkClient, link_client};

use crate::config::{ClientAuthMethod, ProviderConfig};

/// The oauth2 client with the endpoints this worker uses set.
pub type ProviderClient = LinkClient<EndpointSet>;

pub fn provider_client(config: &ProviderConfig) -> ProviderClient {
    let auth_type = match config.client_auth {
        ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
        ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
    };
    link_client(
        &config.client_id,
        config.auth_url.clone(),
        config.redirect_uri.clone(),
    )
    .set_client_secret(ClientSecret::new(config.client_secret.expose().to_owned()))
    .set_auth_type(auth_type)
    .set_token_uri(TokenUrl::from_url(config.token_url.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderProfile, Scopes, Secret};

    fn config() -> ProviderConfig {
        ProviderConfig {
            client_id: "client-1".into(),
            client_secret: "s3cret".parse::<Secret>().expect("secret"),
            auth_url: "https://accounts.example/o/oauth2/v2/auth"
                .parse()
                .expect("url"),
            token_url: "https://oauth2.example/token".parse().expect("url"),
            redirect_uri: "http://127.0.0.1:3004/api/google/callback"
                .parse()
                .expect("url"),
            scopes: "https://www.googleapis.com/auth/calendar openid email"
                .parse::<Scopes>()
                .expect("scopes"),
            userinfo_url: "https://openidconnect.example/v1/userinfo"
                .parse()
                .expect("url"),
            calendar_api_url: "https://www.example/calendar/v3".parse().expect("url"),
            revoke_url: "https://oauth2.example/revoke".parse().expect("url"),
            client_auth: ClientAuthMethod::ClientSecretBasic,
            profile: ProviderProfile::Google,
            token_response_omits_scope: false,
            timeout: std::time::Duration::from_secs(10),
            attempts: 3,
        }
    }

    #[test]
    fn the_workers_links_name_the_client_and_never_its_secret() {
        let config = config();
        let link = service_kit::auth_link::issue_link(
            &provider_client(&config),
            ProviderProfile::Google,
            &config.scopes.0,
            "user@example.com",
        );
        let q: std::collections::HashMap<String, String> =
            link.url.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "client-1");
        assert_eq!(
            q["redirect_uri"],
            "http://127.0.0.1:3004/api/google/callback"
        );
        assert!(
            !link.url.as_str().contains("s3cret"),
            "client secret in URL"
        );
    }
}
