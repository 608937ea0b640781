//! Prints a user token the api accepts, signed with the configured `JWT_SECRET` (or the
//! development default), so people can try the api without an identity provider:
//!
//! ```sh
//! TOKEN=$(cargo run -q -p api --bin mint-dev-token -- 68cf05f060d294db17c0685e)
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3002/api/connectors/68cf05f060d294db17c0685e
//! ```
//!
//! It reads the same settings (environment, then `.env`) as the api, so its tokens carry the
//! configured `iss`/`aud`. It only signs HS256: RS256/ES256 tokens come from the identity
//! provider that holds the private key.

use std::process::ExitCode;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use schemas::SubaccountId;
use service_kit::Env;
use service_kit::auth::{
    ADMIN_ROLE, Audience, INVITE, JwtAlgorithm, JwtConfig, MANAGE_CONNECTORS, UserClaims,
};

const USAGE: &str = "usage: mint-dev-token <subaccountId> [--ttl 1h] [--sub dev-user] [--admin]

Prints a JWT for the api, granting <subaccountId> and the connectors:manage and
connectors:invite permissions (connect, and email the link to any address), signed with JWT_SECRET (HS256; the development default when unset).
  --ttl    how long the token is valid (default 1h; e.g. 30m, 8h)
  --sub    the user id in the token (default dev-user)
  --admin  add the admin role (every subaccount)";

struct Args {
    subaccount: SubaccountId,
    ttl: Duration,
    sub: String,
    admin: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut subaccount = None;
    let mut ttl = Duration::from_secs(3600);
    let mut sub = "dev-user".to_owned();
    let mut admin = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ttl" => {
                let raw = args.next().ok_or("--ttl needs a duration such as 1h")?;
                ttl = humantime::parse_duration(&raw).map_err(|e| format!("--ttl {raw}: {e}"))?;
            }
            "--sub" => sub = args.next().ok_or("--sub needs a value")?,
            "--admin" => admin = true,
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if subaccount.is_none() => {
                subaccount = Some(SubaccountId::parse(other).map_err(|e| e.to_string())?);
            }
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    Ok(Args {
        subaccount: subaccount.ok_or("the subaccount id is required")?,
        ttl,
        sub,
        admin,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("mint-dev-token: {problem}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut env = Env::from_process();
    let config = JwtConfig::from_env(&mut env);
    if let Err(err) = env.finish() {
        eprintln!("mint-dev-token: {err}");
        return ExitCode::from(78);
    }
    if config.algorithm != JwtAlgorithm::Hs256 {
        eprintln!(
            "mint-dev-token: JWT_ALGORITHM is {}: tokens must come from the identity provider that holds the private key",
            config.algorithm
        );
        return ExitCode::from(2);
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = UserClaims {
        sub: args.sub,
        subaccount_ids: vec![args.subaccount.to_string()],
        roles: if args.admin {
            vec![ADMIN_ROLE.to_owned()]
        } else {
            Vec::new()
        },
        permissions: vec![MANAGE_CONNECTORS.to_owned(), INVITE.to_owned()],
        email: None,
        iss: config.issuer.clone(),
        aud: config.audience.clone().map(Audience::One),
        exp: now + args.ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
    };
    let key = match EncodingKey::from_secret(config.secret.expose()) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("mint-dev-token: JWT_SECRET cannot be used: {e}");
            return ExitCode::from(78);
        }
    };
    match jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key) {
        Ok(token) => {
            println!("{token}");
            if config.uses_dev_secret() {
                eprintln!("(signed with the public development secret: for local use only)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mint-dev-token: cannot sign: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        let args = parse(&["68CF05F060D294DB17C0685E", "--ttl", "30m", "--admin"]).expect("ok");
        assert_eq!(args.subaccount.as_str(), "68cf05f060d294db17c0685e");
        assert_eq!(args.ttl, Duration::from_secs(1800));
        assert!(args.admin);
        assert!(parse(&[]).is_err());
        assert!(parse(&["not-an-id"]).is_err());
        assert!(parse(&["68cf05f060d294db17c0685e", "--ttl"]).is_err());
        assert!(parse(&["68cf05f060d294db17c0685e", "--what"]).is_err());
    }
}
