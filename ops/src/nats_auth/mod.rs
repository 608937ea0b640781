//! `gcal-ops nats-auth`: the whole NATS auth configuration of a deployment, written offline
//! (it connects to nothing).
//!
//! NATS decentralized auth: an operator key signs one account (JetStream enabled) and a system
//! account; the account key signs one user per [`Identity`], whose JWT carries the permissions
//! [`schemas::bus_access::permissions`] computes from the subject definitions. The server's
//! configuration holds only public JWTs (`resolver: MEMORY`), so it is not a secret; each
//! service gets a `.creds` file (its JWT and nkey seed, mode 0600). A server in operator mode
//! refuses anonymous clients.
//!
//! ```text
//! <dir>/nats-server.conf           operator, accounts (and TLS): `nats-server -c` it
//! <dir>/creds/<identity>.creds     one per identity, 0600
//! <dir>/keys/                     operator, account and system seeds, revocations (0600): keep offline
//! <dir>/tls/                       with --tls-host: ca.pem, server-cert.pem, server-key.pem
//! ```
//!
//! Rotation (see the operator guide): `mint` new credentials for an identity, roll its
//! processes onto them, then `revoke` the old user key and reload the server.

pub mod jwt;
pub mod tls;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nkeys::KeyPair;
use schemas::bus_access::{self, Identity, Options, Permissions};
use schemas::subjects::Namespace;

/// The operator, system account and application account keys of one deployment, and the user
/// keys it has revoked.
pub struct Authority {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    /// `(user public key, revoked until)`: credentials of that user issued at or before the
    /// time are refused.
    revoked: Vec<(String, i64)>,
    /// When the authority was made: the operator's and accounts' JWTs are issued at this time,
    /// so rewriting the configuration changes only what changed (a reload applies it).
    issued_at: i64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("operator", &self.operator.public_key())
            .field("account", &self.account.public_key())
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// What `keys/state.json` holds besides the seeds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    issued_at: i64,
    revoked: Vec<(String, i64)>,
}

/// The name of the account every identity belongs to (and of the operator).
const ACCOUNT_NAME: &str = "gcal-connector";

impl Authority {
    /// Fresh keys.
    pub fn new() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            revoked: Vec::new(),
            issued_at: chrono::Utc::now().timestamp(),
        }
    }

    /// The keys `save` wrote to `dir/keys`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let keys = dir.join("keys");
        let seed = |name: &str| -> anyhow::Result<KeyPair> {
            let path = keys.join(name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            KeyPair::from_seed(text.trim())
                .map_err(|e| anyhow::anyhow!("{} is not an nkey seed: {e}", path.display()))
        };
        let state: State = serde_json::from_str(
            &std::fs::read_to_string(keys.join("state.json")).context("keys/state.json")?,
        )
        .context("keys/state.json")?;
        Ok(Self {
            operator: seed("operator.nk")?,
            system: seed("system-account.nk")?,
            account: seed("account.nk")?,
            revoked: state.revoked,
            issued_at: state.issued_at,
        })
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let keys = dir.join("keys");
        for (name, key) in [
            ("operator.nk", &self.operator),
            ("system-account.nk", &self.system),
            ("account.nk", &self.account),
        ] {
            let seed = key.seed().map_err(|e| anyhow::anyhow!("{e}"))?;
            write_private(&keys.join(name), &format!("{seed}\n"))?;
        }
        let state = State {
            issued_at: self.issued_at,
            revoked: self.revoked.clone(),
        };
        write_private(
            &keys.join("state.json"),
            &serde_json::to_string_pretty(&state)?,
        )
    }

    /// The server's auth configuration: the operator, the system account and the account,
    /// with `tls` when given. Public: it holds no seed.
    pub fn server_config(&self, tls: Option<&tls::ServerTlsFiles>) -> anyhow::Result<String> {
        let system = self.system.public_key();
        let account = self.account.public_key();
        let at = self.issued_at;
        let operator_jwt = jwt::operator(&self.operator, ACCOUNT_NAME, &system, at)?;
        let system_jwt = jwt::account(&self.operator, &self.system, "SYS", false, &[], at)?;
        // Issued anew when the revocations change: a server replaces an account's JWT only by
        // a newer one.
        let account_at = self
            .revoked
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(at)
            .max(at);
        let account_jwt = jwt::account(
            &self.operator,
            &self.account,
            ACCOUNT_NAME,
            true,
            &self.revoked,
            account_at,
        )?;
        let mut conf = format!(
            "# Written by `gcal-ops nats-auth`: NATS decentralized auth. Public (no seeds): the\n\
             # users' permissions travel in their credentials, signed by the account key.\n\
             # Anonymous clients are refused.\n\
             # A client's CONNECT carries its JWT, permissions included: room for them.\n\
             max_control_line: 65536\n\
             operator: \"{operator_jwt}\"\n\
             system_account: \"{system}\"\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  \"{system}\": \"{system_jwt}\"\n  \"{account}\": \"{account_jwt}\"\n}}\n"
        );
        if let Some(files) = tls {
            conf.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                files.cert.display(),
                files.key.display()
            ));
        }
        Ok(conf)
    }

    /// A new user of `identity` in `ns`: its `.creds` text and public key.
    pub fn mint(
        &self,
        identity: Identity,
        ns: &Namespace,
        options: Options,
    ) -> anyhow::Result<(String, String)> {
        let permissions = bus_access::permissions(identity, ns, options);
        self.mint_with(identity.name(), &permissions)
    }

    /// A user named `name` with any `permissions` (the test harness's driver).
    pub fn mint_with(
        &self,
        name: &str,
        permissions: &Permissions,
    ) -> anyhow::Result<(String, String)> {
        let user = KeyPair::new_user();
        let token = jwt::user(&self.account, &user, name, permissions)?;
        let seed = user.seed().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((jwt::creds(&token, &seed), user.public_key()))
    }

    /// Refuses, from the next server reload on, every credential of `user_key` issued until
    /// now.
    pub fn revoke(&mut self, user_key: &str) {
        let now = chrono::Utc::now().timestamp();
        self.revoked.retain(|(key, _)| key != user_key);
        self.revoked.push((user_key.to_owned(), now));
    }
}

impl Default for Authority {
    fn default() -> Self {
        Self::new()
    }
}

/// What `generate` writes.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub options: Options,
    /// Host names and IP addresses the server certificate is valid for; empty: no TLS.
    pub tls_hosts: Vec<String>,
}

/// Writes a new authority, the server configuration and one `.creds` per identity to `dir`,
/// which must not hold an authority yet.
pub fn generate(
    dir: &Path,
    ns: &Namespace,
    options: &GenerateOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if dir.join("keys").exists() {
        return Err(crate::UsageError(format!(
            "{} already holds NATS keys; rotate with `gcal-ops nats-auth mint` and `revoke`, or remove the directory to start over",
            dir.display()
        ))
        .into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let authority = Authority::new();
    authority.save(&dir)?;
    let tls = if options.tls_hosts.is_empty() {
        None
    } else {
        Some(tls::write_server_tls(&dir.join("tls"), &options.tls_hosts)?)
    };
    write_public(
        &dir.join("nats-server.conf"),
        &authority.server_config(tls.as_ref())?,
    )?;
    for identity in Identity::ALL {
        let (creds, key) = authority.mint(identity, ns, options.options)?;
        let path = creds_path(&dir, identity);
        write_private(&path, &creds)?;
        writeln!(out, "{:<18} {}  {}", identity.name(), key, path.display())?;
    }
    writeln!(
        out,
        "server config: {}{}",
        dir.join("nats-server.conf").display(),
        if tls.is_some() {
            format!(" (TLS; clients trust {})", dir.join("tls/ca.pem").display())
        } else {
            String::new()
        }
    )?;
    Ok(())
}

/// Where `generate` and `mint` put an identity's credentials.
pub fn creds_path(dir: &Path, identity: Identity) -> PathBuf {
    dir.join("creds").join(format!("{}.creds", identity.name()))
}

/// New credentials for `identity`, signed by the authority in `dir`, written to `to` (default:
/// the identity's file, whose previous content moves to `<identity>.creds.previous`). Prints
/// the new user key and the one it replaces.
pub fn mint(
    dir: &Path,
    ns: &Namespace,
    identity: Identity,
    options: Options,
    to: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let authority = Authority::load(dir)?;
    let (creds, key) = authority.mint(identity, ns, options)?;
    let target = to.map_or_else(|| creds_path(dir, identity), Path::to_path_buf);
    let previous = std::fs::read_to_string(&target)
        .ok()
        .and_then(|text| user_key(&text));
    if let Some(old) = &previous {
        let kept = target.with_extension("creds.previous");
        std::fs::rename(&target, &kept)?;
        writeln!(out, "previous {old} kept in {}", kept.display())?;
    }
    write_private(&target, &creds)?;
    writeln!(out, "new {} {key} in {}", identity.name(), target.display())?;
    Ok(())
}

/// Revokes the user whose credentials are in `creds` (or whose public key is `creds`), and
/// rewrites the server configuration; the server applies it on its next reload
/// (`nats-server --signal reload`), disconnecting that user's clients.
pub fn revoke(dir: &Path, creds: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut authority = Authority::load(dir)?;
    let key = if creds.starts_with('U') && !Path::new(creds).exists() {
        creds.to_owned()
    } else {
        let text =
            std::fs::read_to_string(creds).with_context(|| format!("cannot read {creds}"))?;
        user_key(&text).with_context(|| format!("{creds} is not a NATS .creds file"))?
    };
    authority.revoke(&key);
    authority.save(dir)?;
    let tls = tls::ServerTlsFiles::existing(&dir.join("tls"));
    write_public(
        &dir.join("nats-server.conf"),
        &authority.server_config(tls.as_ref())?,
    )?;
    writeln!(
        out,
        "revoked {key}; reload the server to apply: nats-server --signal reload"
    )?;
    Ok(())
}

/// The user public key of a `.creds` file.
pub fn user_key(creds: &str) -> Option<String> {
    let (token, _) = jwt::parse_creds(creds)?;
    jwt::claims(&token)?["sub"].as_str().map(str::to_owned)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("file").permissions().mode() & 0o777
    }

    /// The operator and account JWTs in a written server configuration.
    fn preloaded(conf: &str) -> (String, Vec<serde_json::Value>) {
        let operator = conf
            .split("operator: \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("operator")
            .to_owned();
        let accounts = conf
            .split("resolver_preload: {")
            .nth(1)
            .expect("preload")
            .lines()
            .filter_map(|l| l.split("\": \"").nth(1))
            .filter_map(|jwt| jwt::claims(jwt.trim_end_matches('"')))
            .collect();
        (operator, accounts)
    }

    #[test]
    fn generate_mint_and_revoke_write_what_a_server_and_its_clients_need() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out_dir = dir.path().join("auth");
        let ns = Namespace::new("prod").expect("ns");
        let options = GenerateOptions {
            options: Options::default(),
            tls_hosts: vec!["nats.internal".into()],
        };
        let mut out = Vec::new();
        generate(&out_dir, &ns, &options, &mut out).expect("generate");
        let conf = std::fs::read_to_string(out_dir.join("nats-server.conf")).expect("conf");
        assert!(
            conf.contains("resolver: MEMORY") && conf.contains("tls {"),
            "{conf}"
        );
        for key in ["operator.nk", "account.nk", "system-account.nk"] {
            let seed = std::fs::read_to_string(out_dir.join("keys").join(key)).expect("seed");
            assert!(!conf.contains(seed.trim()), "{key} in the public config");
        }
        for identity in Identity::ALL {
            let path = creds_path(&out_dir, identity);
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            let text = std::fs::read_to_string(&path).expect("creds");
            let (token, _) = jwt::parse_creds(&text).expect("creds layout");
            let claims = jwt::claims(&token).expect("claims");
            assert_eq!(claims["name"], identity.name());
            assert_eq!(claims["nats"]["type"], "user");
        }
        assert_eq!(mode(&out_dir.join("keys/account.nk")), 0o600);
        assert_eq!(mode(&out_dir.join("tls/server-key.pem")), 0o600);
        // A second generate would orphan every credential: refused.
        let again = generate(&out_dir, &ns, &options, &mut Vec::new());
        assert!(again.is_err_and(|e| e.downcast_ref::<crate::UsageError>().is_some()));

        // Rotation: new credentials beside the old, then the old key revoked.
        let old_key = user_key(
            &std::fs::read_to_string(creds_path(&out_dir, Identity::MailerWorker)).expect("old"),
        )
        .expect("key");
        mint(
            &out_dir,
            &ns,
            Identity::MailerWorker,
            Options::default(),
            None,
            &mut out,
        )
        .expect("mint");
        let previous = out_dir.join("creds/mailer-worker.creds.previous");
        let new_key = user_key(
            &std::fs::read_to_string(creds_path(&out_dir, Identity::MailerWorker)).expect("new"),
        )
        .expect("key");
        assert_ne!(old_key, new_key);
        revoke(&out_dir, previous.to_str().expect("path"), &mut out).expect("revoke");
        let revoked = std::fs::read_to_string(out_dir.join("nats-server.conf")).expect("conf");
        let (operator_before, _) = preloaded(&conf);
        let (operator_after, accounts) = preloaded(&revoked);
        assert_eq!(
            operator_before, operator_after,
            "the operator must not change: a reload refuses that"
        );
        let account = accounts
            .iter()
            .find(|a| a["name"] == ACCOUNT_NAME)
            .expect("the account");
        assert!(
            account["nats"]["revocations"][&old_key].is_i64(),
            "{account}"
        );
        assert!(account["nats"]["revocations"][&new_key].is_null());
        assert!(account["nats"]["tls"].is_null());
        assert!(revoked.contains("tls {"), "TLS kept on rewrite");
    }
}
