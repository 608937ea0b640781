//! The cluster shape on one machine, every part a child process that can be SIGKILLed and
//! started again as it was:
//!
//! - three nats-server nodes forming one JetStream cluster (routes on loopback, the binary's
//!   NATS auth and TLS from [`crate::nats_auth`]); the services get all three as seeds in
//!   `NATS_URL` and `STREAM_REPLICAS=auto` makes the streams R3;
//! - redis-server with an append-only file fsynced before every answer;
//! - secantusd-rs with `--sync-on-commit`;
//! - `dev-smtp-sink --journal`;
//! - [`ClusterOptions::replicas`] replicas of every service (or
//!   [`ClusterOptions::replicas_of`] for some). The api's replicas share one
//!   address, and so do the oauth-worker's (`API_HTTP_REUSE_PORT`,
//!   `OAUTH_WORKER_HTTP_REUSE_PORT`: `SO_REUSEPORT`, no proxy in between); the workers' health
//!   addresses are one per replica.
//!
//! A service replica is `program args… <service>`: the chaos run (tests/tests/chaos.rs) starts
//! its own test binary, which runs the service's `main_from_env` — the code of the real
//! binary. Each member appends to its own log; a restart writes a marker line first, and
//! readiness is read from what follows it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::process::{free_port, scratch_dir, spawn};
use crate::tools::binary;

/// How long a member may take to become ready after a (re)start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The services, in start order.
pub const SERVICES: [&str; 4] = ["oauth-worker", "metadata-worker", "mailer-worker", "api"];

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Prefix of NATS subjects and streams, Redis keys and database names.
    pub namespace: String,
    /// A service replica runs `service_program service_args… <service>`.
    pub service_program: PathBuf,
    pub service_args: Vec<String>,
    /// The `dev-smtp-sink` binary.
    pub smtp_sink: PathBuf,
    /// Replicas of each service (2 for the cluster shape).
    pub replicas: usize,
    /// Services with another number of replicas than `replicas` (the scale bench's
    /// `("metadata-worker", 4)`); empty, every service has `replicas`.
    pub replicas_of: Vec<(&'static str, usize)>,
    /// Settings every service gets on top of the cluster's (the provider's URLs, limits).
    pub service_env: Vec<(String, String)>,
    /// The oauth-worker's address, when the caller needs it before the start (the provider
    /// must know the callback URL); else a free port.
    pub oauth: Option<SocketAddr>,
    /// Where the members' logs and data go; else a scratch directory (removed by the next test
    /// process once this one has exited).
    pub dir: Option<PathBuf>,
}

impl ClusterOptions {
    /// How many replicas of `service` to start.
    pub fn replicas_for(&self, service: &str) -> usize {
        self.replicas_of
            .iter()
            .find(|(name, _)| *name == service)
            .map_or(self.replicas, |(_, n)| *n)
    }
}

/// What kind of process a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Nats,
    Redis,
    Mongo,
    SmtpSink,
    Service(&'static str),
}

impl Role {
    /// Infrastructure (not one of our services).
    pub fn is_infrastructure(self) -> bool {
        !matches!(self, Role::Service(_))
    }
}

/// How a member shows it is ready: a log line after its last start, or `/readyz` answering 200.
#[derive(Debug, Clone)]
enum Ready {
    LogLine(&'static str),
    Readyz(SocketAddr),
}

/// One process of the cluster.
#[derive(Debug)]
pub struct Member {
    /// `nats-1`, `redis`, `api-2`, …
    pub name: String,
    pub role: Role,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    pub log: PathBuf,
    ready: Ready,
    child: Option<Child>,
    /// Where this start's output begins in `log`.
    log_offset: u64,
    /// How many times it was started (1 after the cluster started).
    pub starts: u32,
}

impl Member {
    fn start(&mut self) -> std::io::Result<()> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // No .env file of a repository is read: the member's own directory.
            .current_dir(&self.dir);
        self.starts += 1;
        let marker = format!(
            "==== cluster: start {} of {} ====\n",
            self.starts, self.name
        );
        append(&self.log, &marker)?;
        self.log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        self.child = Some(spawn(command, &self.log)?);
        Ok(())
    }

    /// SIGKILL, as a crash; returns once the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its own health address (the workers'; the api's and oauth-worker's is shared).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        match self.ready {
            Ready::Readyz(addr) => Some(addr),
            Ready::LogLine(_) => None,
        }
    }

    /// Starts it again with the same command, ports and data.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.start()
    }

    /// This start's output so far.
    pub fn output(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(self.log_offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// Whether it is ready now.
    pub async fn is_ready(&mut self, http: &reqwest::Client) -> bool {
        if !self.is_running() {
            return false;
        }
        match &self.ready {
            Ready::LogLine(needle) => self.output().contains(needle),
            Ready::Readyz(addr) => http
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
        }
    }

    /// Waits until it is ready; the error says why not (it exited, or the time ran out) with
    /// the end of its output.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ready(http).await {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!("{} exited:\n{}", self.name, tail(&self.output())));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready within {timeout:?}:\n{}",
                    self.name,
                    tail(&self.output())
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub namespace: String,
    /// The api's one address (all its replicas).
    pub api: SocketAddr,
    /// The oauth-worker's one address (the OAuth callback of all its replicas).
    pub oauth: SocketAddr,
    /// The SMTP sink's mailbox (`/messages`).
    pub mailbox: SocketAddr,
    /// `NATS_URL` as the services get it: the three seeds.
    pub nats_url: String,
    pub redis_url: String,
    pub mongodb_uri: String,
    dir: PathBuf,
}

impl Cluster {
    /// Starts everything and waits until every member is ready.
    pub async fn start(options: &ClusterOptions) -> Result<Self, String> {
        let dir = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                dir.clone()
            }
            None => scratch_dir("cluster"),
        };
        let auth = crate::nats_auth::auth();
        let nats_config = auth.config.to_string_lossy().into_owned();
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nats_url = client_ports
            .iter()
            .map(|p| format!("tls://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for i in 0..3 {
            let routes = route_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            let name = format!("nats-{}", i + 1);
            let member_dir = member_dir(&dir, &name);
            let args = vec![
                "-c".into(),
                nats_config.clone(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client_ports[i].to_string(),
                "-n".into(),
                name.clone(),
                "-js".into(),
                "-sd".into(),
                member_dir.join("js").to_string_lossy().into_owned(),
                "--cluster_name".into(),
                "gcal-chaos".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", route_ports[i]),
                "--routes".into(),
                routes,
            ];
            members.push(Member::new(
                name,
                Role::Nats,
                binary("nats-server"),
                args,
                Vec::new(),
                member_dir,
                Ready::LogLine("Server is ready"),
            ));
        }
        let redis_port = free_port();
        let redis_dir = member_dir(&dir, "redis");
        members.push(Member::new(
            "redis".into(),
            Role::Redis,
            binary("redis-server"),
            [
                "--bind",
                "127.0.0.1",
                "--port",
                &redis_port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                &redis_dir.to_string_lossy(),
            ]
            .map(str::to_owned)
            .to_vec(),
            Vec::new(),
            redis_dir,
            Ready::LogLine("Ready to accept connections"),
        ));
        let mongo_port = free_port();
        let mongo_dir = member_dir(&dir, "mongo");
        let mongo_config = mongo_dir.join("secantusd.toml");
        std::fs::write(&mongo_config, "# cluster harness: flags only\n")
            .map_err(|e| e.to_string())?;
        members.push(Member::new(
            "mongo".into(),
            Role::Mongo,
            binary("secantusd-rs"),
            vec![
                "--config".into(),
                mongo_config.to_string_lossy().into_owned(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                mongo_port.to_string(),
                "--cache-size".into(),
                "256M".into(),
                "--log-file-max".into(),
                "16MB".into(),
                "--storage-path".into(),
                mongo_dir.join("data").to_string_lossy().into_owned(),
                "--sync-on-commit".into(),
            ],
            Vec::new(),
            mongo_dir,
            Ready::LogLine("listening on 127.0.0.1:"),
        ));
        let smtp_port = free_port();
        let mailbox: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let sink_dir = member_dir(&dir, "smtp-sink");
        members.push(Member::new(
            "smtp-sink".into(),
            Role::SmtpSink,
            options.smtp_sink.clone(),
            vec![
                "--smtp".into(),
                format!("127.0.0.1:{smtp_port}"),
                "--http".into(),
                mailbox.to_string(),
                "--journal".into(),
                sink_dir
                    .join("mailbox.jsonl")
                    .to_string_lossy()
                    .into_owned(),
            ],
            Vec::new(),
            sink_dir,
            Ready::LogLine("dev-smtp-sink: SMTP on"),
        ));

        let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let oauth = options
            .oauth
            .unwrap_or_else(|| ([127, 0, 0, 1], free_port()).into());
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let mongodb_uri = format!("mongodb://127.0.0.1:{mongo_port}");
        let common: Vec<(String, String)> = [
            ("NATS_URL", nats_url.clone()),
            ("NATS_NAMESPACE", options.namespace.clone()),
            ("REDIS_URL", redis_url.clone()),
            ("REDIS_KEY_PREFIX", options.namespace.clone()),
            ("MONGODB_URI", mongodb_uri.clone()),
            (
                "MONGODB_DATABASE_TEMPLATE",
                format!("{}_{{subaccountId}}", options.namespace),
            ),
            ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
            (
                "OAUTH_REDIRECT_URI",
                format!("http://{oauth}/api/google/callback"),
            ),
            ("API_HTTP_ADDR", api.to_string()),
            ("API_HTTP_REUSE_PORT", "true".into()),
            ("OAUTH_WORKER_HTTP_ADDR", oauth.to_string()),
            ("OAUTH_WORKER_HTTP_REUSE_PORT", "true".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(options.service_env.iter().cloned())
        .collect();
        for service in SERVICES {
            for replica in 1..=options.replicas_for(service) {
                let name = format!("{service}-{replica}");
                let member_dir = member_dir(&dir, &name);
                let mut env = common.clone();
                // Its own NATS identity (credentials and CA); Redis runs without TLS here.
                env.extend(
                    auth.binary_settings(service, &options.namespace)
                        .into_iter()
                        .filter(|(k, _)| *k != "REDIS_TLS_CA_FILE")
                        .map(|(k, v)| (k.to_owned(), v)),
                );
                let ready = match service {
                    "metadata-worker" | "mailer-worker" => {
                        let health: SocketAddr = ([127, 0, 0, 1], free_port()).into();
                        let setting = if service == "metadata-worker" {
                            "METADATA_WORKER_HEALTH_ADDR"
                        } else {
                            "MAILER_WORKER_HEALTH_ADDR"
                        };
                        env.push((setting.into(), health.to_string()));
                        Ready::Readyz(health)
                    }
                    // Both share their address: `http::serve` says "listening" once the
                    // replica's dependencies are connected and it has joined the port.
                    _ => Ready::LogLine("listening"),
                };
                let mut args = options.service_args.clone();
                args.push(service.into());
                members.push(Member::new(
                    name,
                    Role::Service(service),
                    options.service_program.clone(),
                    args,
                    env,
                    member_dir,
                    ready,
                ));
            }
        }
        let mut cluster = Self {
            members,
            namespace: options.namespace.clone(),
            api,
            oauth,
            mailbox,
            nats_url,
            redis_url,
            mongodb_uri,
            dir,
        };
        let http = reqwest::Client::new();
        // Infrastructure first, all at once (the NATS nodes find each other), then services.
        for infra in [true, false] {
            for member in cluster
                .members
                .iter_mut()
                .filter(|m| m.role.is_infrastructure() == infra)
            {
                member
                    .start()
                    .map_err(|e| format!("{} cannot start: {e}", member.name))?;
            }
            for member in cluster
                .members
                .iter_mut()
                .filter(|m| m.role.is_infrastructure() == infra)
            {
                member.wait_ready(&http, READY_TIMEOUT).await?;
            }
        }
        Ok(cluster)
    }

    pub fn member(&mut self, name: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.name == name)
    }

    /// Where the members' logs and data are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Member {
    fn new(
        name: String,
        role: Role,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        dir: PathBuf,
        ready: Ready,
    ) -> Self {
        Self {
            log: dir.join(format!("{name}.log")),
            name,
            role,
            program,
            args,
            env,
            dir,
            ready,
            child: None,
            log_offset: 0,
            starts: 0,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Services first, so none logs the infrastructure going away as a failure.
        for member in self.members.iter_mut().rev() {
            if let Some(child) = member.child.as_mut() {
                crate::process::terminate(child);
            }
        }
    }
}

fn member_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("member directory");
    dir
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

fn tail(text: &str) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
