//! The NATS auth every test server runs with: one operator and account per test binary
//! (`gcal-ops nats-auth`'s own code), TLS with a throw-away CA, and per test the credentials of
//! every identity for the test's namespace, with exactly the permissions production gets.
//!
//! Tests drive the system from outside through a `driver` user allowed everything (it stands
//! for the test, never for a service); every service runs as its own identity.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ops::nats_auth::Authority;
use ops::nats_auth::tls::{ServerTlsFiles, write_server_tls};
use schemas::bus_access::{Identity, Options, Permissions};
use schemas::subjects::Namespace;

/// The binary's authority, its server configuration and CA.
#[derive(Debug)]
pub struct TestAuth {
    pub dir: PathBuf,
    /// `nats-server -c` this.
    pub config: PathBuf,
    /// The same auth without TLS (benchmarks measure what TLS costs).
    pub plaintext_config: PathBuf,
    /// PEM of the CA that signed the servers' certificate (`NATS_TLS_CA_FILE`).
    pub ca: String,
    tls: ServerTlsFiles,
    authority: Mutex<Authority>,
}

static AUTH: OnceLock<TestAuth> = OnceLock::new();

/// The binary's authority, made on first use.
pub fn auth() -> &'static TestAuth {
    AUTH.get_or_init(|| {
        // Every client of these servers speaks TLS: tests, benchmarks and floors alike.
        service_kit::tls::install_crypto_provider();
        let dir = crate::process::scratch_dir("nats-auth");
        let tls = write_server_tls(
            &dir.join("tls"),
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
        )
        .expect("test NATS certificates");
        let auth = TestAuth {
            config: dir.join("nats-server.conf"),
            plaintext_config: dir.join("nats-server-plaintext.conf"),
            ca: tls.ca.to_string_lossy().into_owned(),
            tls,
            authority: Mutex::new(Authority::new()),
            dir,
        };
        auth.write_config();
        auth
    })
}

impl TestAuth {
    fn write_config(&self) {
        let authority = self.authority.lock().expect("authority");
        for (path, tls) in [
            (&self.config, Some(&self.tls)),
            (&self.plaintext_config, None),
        ] {
            let text = authority.server_config(tls).expect("server config");
            // Atomically: servers may be starting from it.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write server config");
            std::fs::rename(&tmp, path).expect("replace server config");
        }
    }

    /// The servers' certificate, key and CA (PEM paths): valid for 127.0.0.1 and localhost.
    pub fn server_tls(&self) -> (String, String, String) {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        (path(&self.tls.cert), path(&self.tls.key), self.ca.clone())
    }

    /// Credentials of `identity` in `ns`, written to `dir`; returns the file's path.
    pub fn mint(&self, identity: Identity, ns: &Namespace, options: Options, dir: &Path) -> String {
        let permissions = schemas::bus_access::permissions(identity, ns, options);
        let suffix = if options.api_reads_events { "-dev" } else { "" };
        self.write_creds(dir, &format!("{}{suffix}", identity.name()), &permissions)
    }

    /// The test's own user: everything allowed.
    pub fn mint_driver(&self, dir: &Path) -> String {
        let all = Permissions {
            publish_allow: vec![">".into()],
            subscribe_allow: vec![">".into()],
            allow_responses: true,
            ..Permissions::default()
        };
        self.write_creds(dir, "driver", &all)
    }

    fn write_creds(&self, dir: &Path, name: &str, permissions: &Permissions) -> String {
        let (creds, _) = self
            .authority
            .lock()
            .expect("authority")
            .mint_with(name, permissions)
            .expect("mint credentials");
        std::fs::create_dir_all(dir).expect("creds dir");
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, creds).expect("write creds");
        path.to_string_lossy().into_owned()
    }

    /// `NATS_CREDS_FILE`, `NATS_TLS_CA_FILE` and `REDIS_TLS_CA_FILE` for the service `binary`
    /// (a path whose file name is the service's) in namespace `ns`, for tests that start a
    /// service binary.
    pub fn binary_settings(&self, binary: &str, ns: &str) -> [(&'static str, String); 3] {
        let name = Path::new(binary)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(binary);
        let identity =
            Identity::from_name(name).unwrap_or_else(|| panic!("{name} has no NATS identity"));
        let ns = Namespace::new(ns).expect("namespace");
        let dir = self.dir.join("binaries").join(ns.prefix());
        let creds = self.mint(identity, &ns, Options::default(), &dir);
        [
            ("NATS_CREDS_FILE", creds),
            ("NATS_TLS_CA_FILE", self.ca.clone()),
            ("REDIS_TLS_CA_FILE", self.ca.clone()),
        ]
    }

    /// Revokes the user of `creds_file` in the configuration; servers apply it when they
    /// reload ([`crate::servers::NatsServer::reload`]).
    pub fn revoke(&self, creds_file: &str) {
        let text = std::fs::read_to_string(creds_file).expect("creds file");
        let key = ops::nats_auth::user_key(&text).expect("a creds file");
        self.authority.lock().expect("authority").revoke(&key);
        self.write_config();
    }
}
