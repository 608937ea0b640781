//! User authentication for HTTP services: a bearer JWT, verified, becomes [`UserClaims`].
//!
//! Handlers take an [`AuthenticatedUser`] argument; when the request has no valid token the
//! extractor answers 401 itself (with `WWW-Authenticate: Bearer`) and the handler never runs.
//! Authorisation — may this user act on *this* subaccount, with *this* permission — is a second,
//! explicit step ([`UserClaims::authorize`]) that the handler performs after validating its
//! input, so a request is rejected in the order 401 → 400 → 403.
//!
//! # The token contract
//!
//! A user token is a JWS signed with the one algorithm the deployment pins (`JWT_ALGORITHM`:
//! `HS256` with `JWT_SECRET`, or `RS256`/`ES256` with keys from `JWT_JWKS_URL`). A token whose
//! header names any other algorithm is refused before its signature is looked at. Its claims:
//!
//! | claim | type | meaning |
//! |---|---|---|
//! | `sub` | string, required | the user (logged, never trusted for access) |
//! | `subaccountIds` | array of 24-hex strings | subaccounts the user may act on (case-insensitive) |
//! | `roles` | array of strings | `"admin"` grants every subaccount (not every permission) |
//! | `permissions` | array of strings | e.g. `"connectors:manage"`, required by the connector routes; `"connectors:invite"` to email a consent link to another address |
//! | `email` | string, optional | the user's own address (OpenID Connect's standard claim): a consent link may be emailed to it without `connectors:invite` |
//! | `exp` | number, required | expiry (seconds since the epoch), checked with `JWT_LEEWAY` |
//! | `nbf` | number, optional | not before, checked with `JWT_LEEWAY` when present |
//! | `iat` | number, optional | issued at; informational |
//! | `iss` | string | must equal `JWT_ISSUER` when that is set (and is then required) |
//! | `aud` | string or array | must contain `JWT_AUDIENCE` when that is set (and is then required) |
//!
//! Other claims are ignored. With JWKS keys the header's `kid` selects the key; a token without
//! a `kid` is accepted only while the key set holds exactly one usable key.
//!
//! Secrets and tokens never reach a log line or an error message: errors name what is wrong
//! with a token (expired, bad signature, wrong issuer), never its content.

mod config;
mod extract;
mod jwks;
mod verifier;

use schemas::{SubaccountId, UserEmail};
use serde::{Deserialize, Serialize};

pub use config::{DEV_JWT_SECRET, JwtAlgorithm, JwtConfig, JwtSecret};
pub use extract::AuthenticatedUser;
pub use verifier::{AuthError, JwtVerifier};

/// The permission every connector route requires.
pub const MANAGE_CONNECTORS: &str = "connectors:manage";
/// Emailing a consent link to an address that is not the caller's own (the token's `email`
/// claim): without it, anyone who may manage connectors could have a link mailed to anyone.
pub const INVITE: &str = "connectors:invite";
/// The role that grants access to every subaccount.
pub const ADMIN_ROLE: &str = "admin";

/// The claims of a verified user token (see the module docs for the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserClaims {
    /// Who the user is; appears in logs so an action can be traced to a person.
    pub sub: String,
    /// Subaccounts this user may act on. Compared case-insensitively, as subaccount ids are
    /// hex and the platform does not promise a case.
    #[serde(default)]
    pub subaccount_ids: Vec<String>,
    /// `admin` grants every subaccount; other roles are carried for other services.
    #[serde(default)]
    pub roles: Vec<String>,
    /// What the user may do, e.g. [`MANAGE_CONNECTORS`].
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The user's own address (OpenID Connect's `email` claim): a consent link may be mailed
    /// to it with [`MANAGE_CONNECTORS`] alone. Tokens without it invite only with [`INVITE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// `aud` may be one string or an array of them (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a valid token may not perform a request (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("This token does not grant access to subaccount {0}")]
    Subaccount(SubaccountId),
    #[error("This token lacks the `{0}` permission")]
    Permission(&'static str),
    /// The link would be emailed to someone else and the token may not invite.
    #[error(
        "This token may email a consent link only to its own address (its `email` claim); \
         emailing one to another address needs the `connectors:invite` permission. \
         Or call with sendEmail: false and deliver the returned link yourself"
    )]
    Invite,
}

impl UserClaims {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// Whether the token grants `subaccount`: listed in `subaccountIds`, or an admin.
    pub fn may_act_on(&self, subaccount: &SubaccountId) -> bool {
        self.is_admin()
            || self
                .subaccount_ids
                .iter()
                .any(|id| id.eq_ignore_ascii_case(subaccount.as_str()))
    }

    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// Whether the token's own `email` claim is `address` (both normalized as [`UserEmail`],
    /// compared case-insensitively). No claim, or an unreadable one: not the caller's.
    pub fn is_own_address(&self, address: &UserEmail) -> bool {
        self.email
            .as_deref()
            .and_then(|raw| UserEmail::parse(raw).ok())
            .is_some_and(|own| own.as_str().to_lowercase() == address.as_str().to_lowercase())
    }

    /// May this token have a consent link emailed to `recipient`: its own address, or any
    /// address with [`INVITE`]. Checked after [`Self::authorize`].
    pub fn may_email_link_to(&self, recipient: &UserEmail) -> Result<(), Forbidden> {
        if self.has_permission(INVITE) || self.is_own_address(recipient) {
            Ok(())
        } else {
            Err(Forbidden::Invite)
        }
    }

    /// The access check a handler performs once its input is valid.
    pub fn authorize(
        &self,
        subaccount: &SubaccountId,
        permission: &'static str,
    ) -> Result<(), Forbidden> {
        if !self.may_act_on(subaccount) {
            return Err(Forbidden::Subaccount(subaccount.clone()));
        }
        if !self.has_permission(permission) {
            return Err(Forbidden::Permission(permission));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(subaccounts: &[&str], roles: &[&str], permissions: &[&str]) -> UserClaims {
        UserClaims {
            sub: "u".into(),
            subaccount_ids: subaccounts.iter().map(|s| (*s).to_owned()).collect(),
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            permissions: permissions.iter().map(|s| (*s).to_owned()).collect(),
            email: None,
            iss: None,
            aud: None,
            exp: 0,
            nbf: None,
            iat: None,
        }
    }

    fn sub(raw: &str) -> SubaccountId {
        SubaccountId::parse(raw).expect("valid id")
    }

    #[test]
    fn listed_subaccount_with_permission_is_allowed_case_insensitively() {
        let c = claims(&["68CF05F060D294DB17C0685E"], &[], &[MANAGE_CONNECTORS]);
        assert_eq!(
            c.authorize(&sub("68cf05f060d294db17c0685e"), MANAGE_CONNECTORS),
            Ok(())
        );
    }

    #[test]
    fn other_subaccount_or_missing_permission_is_forbidden() {
        let c = claims(&["68cf05f060d294db17c0685e"], &[], &[MANAGE_CONNECTORS]);
        let other = sub("000000000000000000000001");
        assert_eq!(
            c.authorize(&other, MANAGE_CONNECTORS),
            Err(Forbidden::Subaccount(other.clone()))
        );
        let c = claims(&["68cf05f060d294db17c0685e"], &[], &["connectors:read"]);
        assert_eq!(
            c.authorize(&sub("68cf05f060d294db17c0685e"), MANAGE_CONNECTORS),
            Err(Forbidden::Permission(MANAGE_CONNECTORS))
        );
    }

    #[test]
    fn admin_grants_every_subaccount_but_not_every_permission() {
        let admin = claims(&[], &[ADMIN_ROLE], &[MANAGE_CONNECTORS]);
        assert!(
            admin
                .authorize(&sub("000000000000000000000001"), MANAGE_CONNECTORS)
                .is_ok()
        );
        let admin = claims(&[], &[ADMIN_ROLE], &[]);
        assert_eq!(
            admin.authorize(&sub("000000000000000000000001"), MANAGE_CONNECTORS),
            Err(Forbidden::Permission(MANAGE_CONNECTORS))
        );
    }

    #[test]
    fn a_link_goes_to_the_own_address_or_with_the_invite_permission() {
        let recipient = UserEmail::parse("Person@Example.com").expect("email");
        let mut c = claims(&[], &[], &[MANAGE_CONNECTORS]);
        assert_eq!(c.may_email_link_to(&recipient), Err(Forbidden::Invite));
        c.email = Some(" person@example.COM ".into());
        assert_eq!(c.may_email_link_to(&recipient), Ok(()));
        c.email = Some("other@example.com".into());
        assert_eq!(c.may_email_link_to(&recipient), Err(Forbidden::Invite));
        c.email = Some("not an address".into());
        assert_eq!(c.may_email_link_to(&recipient), Err(Forbidden::Invite));
        c.permissions.push(INVITE.into());
        assert_eq!(c.may_email_link_to(&recipient), Ok(()));
    }

    #[test]
    fn audience_reads_as_string_or_array() {
        let one: UserClaims =
            serde_json::from_str(r#"{"sub":"u","exp":1,"aud":"api"}"#).expect("one");
        assert_eq!(one.aud, Some(Audience::One("api".into())));
        let many: UserClaims =
            serde_json::from_str(r#"{"sub":"u","exp":1,"aud":["a","b"]}"#).expect("many");
        assert_eq!(many.aud, Some(Audience::Many(vec!["a".into(), "b".into()])));
        assert!(many.subaccount_ids.is_empty() && many.permissions.is_empty());
    }
}
