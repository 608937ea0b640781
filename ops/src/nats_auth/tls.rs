//! `--tls-host`: a private certificate authority and a server certificate signed by it, for a
//! NATS server that only the deployment's own clients talk to. Clients trust the CA with
//! `NATS_TLS_CA_FILE`; production servers may use certificates from any CA instead.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Where the server's certificate, its key and the CA are.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerTlsFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    /// The files a previous `generate --tls-host` wrote to `dir`, if it did.
    pub fn existing(dir: &Path) -> Option<Self> {
        let files = Self::in_dir(dir);
        files.cert.exists().then_some(files)
    }
}

/// Writes a new CA and a server certificate valid for `hosts` (names or IP addresses) to
/// `dir`; the keys are 0600.
pub fn write_server_tls(dir: &Path, hosts: &[String]) -> anyhow::Result<ServerTlsFiles> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gcal-connector NATS CA");
    let ca = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let server_key = KeyPair::generate().context("server key")?;
    let mut params =
        CertificateParams::new(hosts.to_vec()).with_context(|| format!("--tls-host {hosts:?}"))?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("nats", String::as_str),
    );
    let server = params
        .signed_by(&server_key, &ca, &ca_key)
        .context("server certificate")?;
    let files = ServerTlsFiles::in_dir(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(&files.ca, ca.pem())?;
    std::fs::write(&files.cert, server.pem())?;
    super::write_private(&files.key, &server_key.serialize_pem())?;
    // The CA key is not kept: a new server certificate comes with a new CA (rotation is
    // `generate` into a new directory, or certificates from your own CA).
    Ok(files)
}
