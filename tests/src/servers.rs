//! The real servers, as child processes on loopback with their own data directories.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::process::{free_port, scratch_dir, spawn, terminate, wait_for_line};
use crate::tools::binary;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One running (or stopped) server: its process, port, data directory and log.
#[derive(Debug)]
struct ServerProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl ServerProcess {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process in its tracks (SIGSTOP): connections stay open, nothing answers.
    /// Returns once the kernel reports it stopped (the signal is delivered asynchronously).
    fn freeze(&self) {
        let pid = self.pid().expect("the server runs");
        crate::process::signal(pid, libc::SIGSTOP);
        let stopped = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) STATE …`: the state follows the last ')'.
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.trim_start().chars().next())
                })
                == Some('T')
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} did not stop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets a frozen process go on (SIGCONT).
    fn thaw(&self) {
        crate::process::signal(self.pid().expect("the server runs"), libc::SIGCONT);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    /// Kills the process (SIGKILL, as a crash) and empties its log for the next start.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::write(&self.log, "");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nats-server with JetStream, and any extra flags it was started with (auth, TLS).
#[derive(Debug)]
pub struct NatsServer(ServerProcess, Vec<String>);

impl NatsServer {
    /// The server process, while it runs (for resource accounting).
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// With the binary's NATS auth and TLS ([`crate::nats_auth`]): anonymous clients are
    /// refused, a test's identities connect.
    pub fn start() -> Self {
        let config = crate::nats_auth::auth()
            .config
            .to_string_lossy()
            .into_owned();
        Self::start_with(&["-c".to_owned(), config])
    }

    /// With the binary's NATS auth but no TLS (for measuring what TLS costs).
    pub fn start_plaintext() -> Self {
        let config = crate::nats_auth::auth()
            .plaintext_config
            .to_string_lossy()
            .into_owned();
        Self::start_with(&["-c".to_owned(), config])
    }

    /// Started with `extra` flags only (e.g. `--user`/`--pass`, `--tls`, `--tlscert`, …): no
    /// auth and no TLS unless they say so.
    pub fn start_with(extra: &[String]) -> Self {
        let dir = scratch_dir("nats");
        let log = dir.join("nats.log");
        let mut server = ServerProcess {
            child: None,
            port: 0,
            dir,
            log,
        };
        // -p -1: the server picks a free port and logs it; no race with other processes.
        let port = Self::launch(&mut server, "-1", extra);
        server.port = port;
        Self(server, extra.to_vec())
    }

    fn launch(server: &mut ServerProcess, port: &str, extra: &[String]) -> u16 {
        let mut cmd = Command::new(binary("nats-server"));
        cmd.args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
            .arg(server.dir.join("js"))
            .args(extra);
        let mut child = spawn(cmd, &server.log).expect("nats-server starts");
        let line = wait_for_line(
            &mut child,
            &server.log,
            "Listening for client connections on",
            START_TIMEOUT,
        )
        .expect("nats-server listens");
        // A restart appends to the same log: the last "Server is ready" follows this start.
        wait_for_line(&mut child, &server.log, "Server is ready", START_TIMEOUT)
            .expect("nats-server is ready");
        server.child = Some(child);
        parse_port(&line)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Stops the server (SIGTERM); its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Makes the server read its configuration again (SIGHUP), as `nats-server --signal
    /// reload` does: new revocations apply to connected clients too.
    pub fn reload(&self) {
        crate::process::signal(self.pid().expect("nats-server runs"), libc::SIGHUP);
    }

    /// Starts it again on the same port with the same JetStream data.
    pub fn restart(&mut self) {
        self.0.stop();
        let _ = std::fs::write(&self.0.log, "");
        let port = self.0.port.to_string();
        Self::launch(&mut self.0, &port, &self.1);
    }
}

/// redis-server (without persistence unless started with [`RedisServer::start_persistent`]),
/// and any extra flags it was started with (TLS, persistence).
#[derive(Debug)]
pub struct RedisServer(ServerProcess, Vec<String>);

impl RedisServer {
    /// The server process, while it runs (for resource accounting).
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Serving TLS only, with `cert` and `key` (PEM files); clients need not present a
    /// certificate. [`Self::url`] is then `rediss://`.
    pub fn start_tls(cert: &str, key: &str, ca: &str) -> Self {
        Self::start_with(&[
            "--tls-cert-file".into(),
            cert.into(),
            "--tls-key-file".into(),
            key.into(),
            "--tls-ca-cert-file".into(),
            ca.into(),
            "--tls-auth-clients".into(),
            "no".into(),
        ])
    }

    /// Persistent as the local run and compose run it: every acknowledged write is in the
    /// append-only file, fsynced, before Redis answers; a SIGKILL loses nothing.
    pub fn start_persistent() -> Self {
        Self::start_with(&[
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "always".into(),
        ])
    }

    /// A replica of `primary` (`--replicaof`), without persistence, like [`Self::start`].
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        Self::start_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port().to_string(),
        ])
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Kills it (SIGKILL, as a crash) and leaves it down; [`Self::restart`] starts it again.
    pub fn kill(&mut self) {
        self.0.crash();
    }

    fn tls(extra: &[String]) -> bool {
        extra.iter().any(|a| a == "--tls-cert-file")
    }

    fn start_with(extra: &[String]) -> Self {
        let dir = scratch_dir("redis");
        let log = dir.join("redis.log");
        let mut server = ServerProcess {
            child: None,
            port: 0,
            dir,
            log,
        };
        // Redis cannot pick its own port; if another process takes ours first, try again.
        for _ in 0..5 {
            server.port = free_port();
            match Self::launch(&mut server, extra) {
                Ok(()) => return Self(server, extra.to_vec()),
                Err(e) if e.contains("Address already in use") => {
                    let _ = std::fs::write(&server.log, "");
                }
                Err(e) => panic!("redis-server did not start: {e}"),
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    fn launch(server: &mut ServerProcess, extra: &[String]) -> Result<(), String> {
        let port = server.port.to_string();
        // With TLS the port is the TLS one and plaintext is off.
        let (port_flag, plain) = if Self::tls(extra) {
            ("--tls-port", Some(["--port", "0"]))
        } else {
            ("--port", None)
        };
        let mut cmd = Command::new(binary("redis-server"));
        // The defaults first: `extra` (persistence) overrides them.
        cmd.args(["--bind", "127.0.0.1", port_flag, &port])
            .args(plain.into_iter().flatten())
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(&server.dir);
        let mut child = spawn(cmd, &server.log).expect("redis-server starts");
        match wait_for_line(
            &mut child,
            &server.log,
            "Ready to accept connections",
            START_TIMEOUT,
        ) {
            Ok(_) => {
                server.child = Some(child);
                Ok(())
            }
            Err(e) => {
                terminate(&mut child);
                Err(e.to_string())
            }
        }
    }

    /// Starts it again on the same port (after [`Self::stop`]): empty unless persistent.
    pub fn restart(&mut self) {
        self.0.stop();
        let _ = std::fs::write(&self.0.log, "");
        Self::launch(&mut self.0, &self.1)
            .unwrap_or_else(|e| panic!("redis-server did not restart: {e}"));
    }

    /// Kills it (SIGKILL, as a crash) and starts it again on the same port: only what it
    /// persisted comes back.
    pub fn crash_and_restart(&mut self) {
        self.0.crash();
        Self::launch(&mut self.0, &self.1)
            .unwrap_or_else(|e| panic!("redis-server did not restart: {e}"));
    }

    pub fn url(&self) -> String {
        let scheme = if Self::tls(&self.1) {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.0.port)
    }

    /// Stops the server (SIGTERM). Without persistence a stop loses its data, as an outage of
    /// a Redis without persistence does.
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Makes it hang (SIGSTOP): connections stay open and nothing answers, until [`Self::thaw`].
    pub fn freeze(&self) {
        self.0.freeze();
    }

    pub fn thaw(&self) {
        self.0.thaw();
    }
}

/// secantusd-rs, the MongoDB-wire server (GPL-2.0: always a separate process, never linked),
/// and how it was started.
#[derive(Debug)]
pub struct MongoServer(ServerProcess, MongoFlags);

#[derive(Debug, Clone, Default)]
struct MongoFlags {
    /// The TLS files it serves with: `(cert, key, ca)`.
    tls: Option<(String, String, String)>,
    /// `--sync-on-commit`: the log is fsynced before a write is acknowledged.
    sync_on_commit: bool,
}

impl MongoServer {
    /// The server process, while it runs (for resource accounting).
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    pub fn start() -> Self {
        Self::start_with(MongoFlags::default())
    }

    /// Serving TLS only, with `cert` and `key`; [`Self::uri`] then asks for TLS and trusts
    /// `ca`.
    pub fn start_tls(cert: &str, key: &str, ca: &str) -> Self {
        Self::start_with(MongoFlags {
            tls: Some((cert.into(), key.into(), ca.into())),
            sync_on_commit: false,
        })
    }

    /// As the local run starts it: `--sync-on-commit`, so an acknowledged write survives a
    /// crash (without it, writes acknowledged just before a SIGKILL are lost).
    pub fn start_durable() -> Self {
        Self::start_with(MongoFlags {
            tls: None,
            sync_on_commit: true,
        })
    }

    fn start_with(flags: MongoFlags) -> Self {
        let dir = scratch_dir("mongo");
        let log = dir.join("mongo.log");
        // An explicit (empty) config file stops it from reading ~/.secantus or /etc/secantus.
        std::fs::write(dir.join("secantusd.toml"), "# e2e harness: flags only\n")
            .expect("config file");
        let mut server = ServerProcess {
            child: None,
            port: 0,
            dir,
            log,
        };
        // --port 0: the server picks a free port and logs it; no race with other processes.
        server.port = Self::launch(&mut server, "0", &flags);
        Self(server, flags)
    }

    fn launch(server: &mut ServerProcess, port: &str, flags: &MongoFlags) -> u16 {
        let mut cmd = Command::new(binary("secantusd-rs"));
        cmd.arg("--config")
            .arg(server.dir.join("secantusd.toml"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--cache-size",
                "256M",
                "--log-file-max",
                "16MB",
            ])
            .arg("--storage-path")
            .arg(server.dir.join("data"));
        if let Some((cert, key, _)) = &flags.tls {
            cmd.args(["--tls-cert-file", cert, "--tls-key-file", key]);
        }
        if flags.sync_on_commit {
            cmd.arg("--sync-on-commit");
        }
        let mut child = spawn(cmd, &server.log).expect("secantusd-rs starts");
        let line = wait_for_line(
            &mut child,
            &server.log,
            "listening on 127.0.0.1:",
            START_TIMEOUT,
        )
        .expect("secantusd-rs listens");
        server.child = Some(child);
        parse_port(&line)
    }

    pub fn uri(&self) -> String {
        match &self.1.tls {
            Some((_, _, ca)) => format!(
                "mongodb://127.0.0.1:{}/?tls=true&tlsCAFile={}",
                self.0.port,
                url::form_urlencoded::byte_serialize(ca.as_bytes()).collect::<String>()
            ),
            None => format!("mongodb://127.0.0.1:{}", self.0.port),
        }
    }

    /// Stops the server (SIGTERM); its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Makes it hang (SIGSTOP): connections stay open and nothing answers, until [`Self::thaw`].
    pub fn freeze(&self) {
        self.0.freeze();
    }

    pub fn thaw(&self) {
        self.0.thaw();
    }

    /// Kills it (SIGKILL, as a crash) and starts it again on the same port and data.
    pub fn crash_and_restart(&mut self) {
        self.0.crash();
        let port = self.0.port.to_string();
        Self::launch(&mut self.0, &port, &self.1);
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.0.stop();
        let _ = std::fs::write(&self.0.log, "");
        let port = self.0.port.to_string();
        Self::launch(&mut self.0, &port, &self.1);
    }
}

/// The port at the end of `...127.0.0.1:PORT` in a log line.
fn parse_port(line: &str) -> u16 {
    line.rsplit(':')
        .next()
        .and_then(|p| {
            p.trim()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no port in log line {line:?}"))
}
