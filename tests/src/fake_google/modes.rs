//! Ways the fake can differ from Google, to prove the oauth-worker also works with a
//! standards-compliant authorization server and fails closed where a provider says less:
//!
//! - [`Profile::Oidc`]: an OpenID provider's offline access (OIDC Core §11). A refresh token
//!   comes only with the `offline_access` scope granted under `prompt=consent`;
//!   `access_type` and `include_granted_scopes` mean nothing. (Google, the default, knows no
//!   `offline_access` scope: asking it is `invalid_scope`.)
//! - [`FakeGoogle::require_client_auth`]: the token endpoint accepts only the given client
//!   authentication method, and the revocation endpoint requires it too (RFC 7009 §2.1), with
//!   401 `invalid_client` otherwise. By default, as at Google, the token endpoint takes either
//!   method and revocation needs none.
//! - [`FakeGoogle::omit_email_verified`]: userinfo answers `email` without `email_verified`.
//! - [`FakeGoogle::omit_token_response_scope`]: token responses carry no `scope`.
//!
//! The `fake-google` binary sets the first two from `FAKE_GOOGLE_PROFILE` and
//! `FAKE_GOOGLE_CLIENT_AUTH`.

use std::str::FromStr;

use super::FakeGoogle;

/// How offline access is asked for and what scopes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `access_type=offline`; `include_granted_scopes`; no `offline_access` scope.
    #[default]
    Google,
    /// The `offline_access` scope with `prompt=consent`.
    Oidc,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "google" => Ok(Self::Google),
            "oidc" => Ok(Self::Oidc),
            other => Err(format!("{other:?} is not google or oidc")),
        }
    }
}

/// A client authentication method (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

impl ClientAuth {
    /// Its name in the OAuth registry.
    pub fn name(self) -> &'static str {
        match self {
            Self::Basic => "client_secret_basic",
            Self::Post => "client_secret_post",
        }
    }
}

impl FromStr for ClientAuth {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "client_secret_basic" => Ok(Self::Basic),
            "client_secret_post" => Ok(Self::Post),
            other => Err(format!(
                "{other:?} is not client_secret_basic or client_secret_post"
            )),
        }
    }
}

/// The switches, part of the shared state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Modes {
    pub profile: Profile,
    /// `Some`: only this method at the token endpoint, and required at the revocation one.
    pub client_auth: Option<ClientAuth>,
    pub omit_email_verified: bool,
    pub omit_token_response_scope: bool,
}

impl FakeGoogle {
    /// Behave as Google (the default) or as an OpenID provider, from the next request on.
    pub fn set_profile(&self, profile: Profile) {
        self.shared.lock().modes.profile = profile;
    }

    /// `Some(method)`: accept only `method` at the token endpoint and require it at the
    /// revocation endpoint (401 `invalid_client` otherwise); `None`: Google's rules.
    pub fn require_client_auth(&self, method: Option<ClientAuth>) {
        self.shared.lock().modes.client_auth = method;
    }

    /// Userinfo answers without `email_verified` (`false` restores it).
    pub fn omit_email_verified(&self, omit: bool) {
        self.shared.lock().modes.omit_email_verified = omit;
    }

    /// Token responses carry no `scope` (`false` restores it).
    pub fn omit_token_response_scope(&self, omit: bool) {
        self.shared.lock().modes.omit_token_response_scope = omit;
    }
}
