//! Mints a random service token and prints the `SERVICE_TOKENS` entry that makes the api
//! accept it, for deployments (and the local run) without an auth server:
//!
//! ```sh
//! cargo run -q -p api --bin mint-service-token -- database-server > .local/service-token.env
//! set -a; . .local/service-token.env; set +a   # SERVICE_TOKEN for the caller, SERVICE_TOKENS for the api
//! ```
//!
//! Only the SHA-256 of the token goes into the api's configuration; the token itself is
//! printed once and kept by the calling service.

use std::process::ExitCode;

use api::service_auth::{METADATA_WRITE, StaticServiceTokens, hex, sha256};

const USAGE: &str = "usage: mint-service-token <service> [--permission P]...

Prints a new random service token and the SERVICE_TOKENS entry that accepts it:
  SERVICE_TOKEN=<token>          (give it to <service>; it is not stored anywhere)
  SERVICE_TOKENS=<service>:<sha256 of the token>:<permissions>
  --permission  a permission of the token, repeatable (default connectors:metadata:write)
Several entries are joined with commas in one SERVICE_TOKENS.";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(String, Vec<String>), String> {
    let mut service = None;
    let mut permissions = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--permission" => permissions.push(args.next().ok_or("--permission needs a value")?),
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if service.is_none() => service = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if permissions.is_empty() {
        permissions.push(METADATA_WRITE.to_owned());
    }
    Ok((service.ok_or("the service name is required")?, permissions))
}

fn main() -> ExitCode {
    let (service, permissions) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("mint-service-token: {problem}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut secret = [0_u8; 32];
    rand::fill(&mut secret);
    let token = format!("gcal_svc_{}", hex(&secret));
    let entry = format!(
        "{service}:{}:{}",
        hex(&sha256(&token)),
        permissions.join("|")
    );
    // The api's own parser decides whether the entry is acceptable.
    if let Err(problem) = entry.parse::<StaticServiceTokens>() {
        eprintln!("mint-service-token: {problem}");
        return ExitCode::from(2);
    }
    println!("SERVICE_TOKEN={token}");
    println!("SERVICE_TOKENS={entry}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(String, Vec<String>), String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&["database-server"]).expect("ok"),
            ("database-server".into(), vec![METADATA_WRITE.to_owned()])
        );
        assert_eq!(
            parse(&["s", "--permission", "a", "--permission", "b:c"])
                .expect("ok")
                .1,
            ["a", "b:c"]
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&["s", "--permission"]).is_err());
        assert!(parse(&["s", "t"]).is_err());
    }
}
