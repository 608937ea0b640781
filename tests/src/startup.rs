//! Start-up behaviour of a service *binary*: the process must exit non-zero with a message
//! naming the setting — never panic, never hang.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::free_port;
use crate::shared::shared;

/// What a binary printed and how it ended.
#[derive(Debug)]
pub struct Exit {
    pub code: Option<i32>,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `binary` with exactly `settings` (no inherited environment, in an empty directory so
/// no `.env` is read) and kills it after `limit`, which fails the test as a hang.
pub fn run_binary(binary: &str, settings: &[(&str, String)], limit: Duration) -> Exit {
    let dir = crate::process::scratch_dir("startup");
    let mut command = Command::new(binary);
    command
        .env_clear()
        .current_dir(&dir)
        .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Exit {
                code: status.code(),
                stderr,
                took: started.elapsed(),
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{binary} still running after {limit:?}: start-up must give up, not hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Malformed settings: exit 78 at once, every bad setting named, no value echoed, no panic.
pub fn assert_rejects_malformed_settings(binary: &str) {
    let exit = run_binary(
        binary,
        &[
            ("MONGODB_URI", "mongo:/secret-password@nowhere".into()),
            ("NATS_URL", "nats://[::1".into()),
            ("STARTUP_TIMEOUT", "eventually".into()),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, Some(78), "exit code; stderr:\n{}", exit.stderr);
    for setting in ["MONGODB_URI", "NATS_URL", "STARTUP_TIMEOUT"] {
        assert!(
            exit.stderr.contains(setting),
            "{setting} not named in:\n{}",
            exit.stderr
        );
    }
    assert!(
        !exit.stderr.contains("secret-password"),
        "value echoed:\n{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("panicked"), "panic:\n{}", exit.stderr);
}

/// NATS_URL where nothing listens (MongoDB and Redis reachable): exit 1 after the configured
/// STARTUP_TIMEOUT, naming NATS_URL and only NATS_URL.
pub fn assert_gives_up_on_unreachable_nats(binary: &str) {
    let infra = shared();
    let exit = run_binary(
        binary,
        &[
            ("NATS_URL", format!("nats://127.0.0.1:{}", free_port())),
            ("MONGODB_URI", infra.mongo.uri()),
            ("REDIS_URL", infra.redis.url()),
            ("REDIS_TLS_CA_FILE", crate::nats_auth::auth().ca.clone()),
            ("STARTUP_TIMEOUT", "2s".into()),
            // Any free ports: the service must fail before it listens anyway.
            ("API_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
            (
                "OAUTH_WORKER_HTTP_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "METADATA_WORKER_HEALTH_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "MAILER_WORKER_HEALTH_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(exit.code, Some(1), "exit code; stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("NATS_URL") && exit.stderr.contains("unreachable"),
        "{}",
        exit.stderr
    );
    assert!(
        !exit.stderr.contains("MONGODB_URI") && !exit.stderr.contains("REDIS_URL"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.took >= Duration::from_secs(2),
        "gave up before STARTUP_TIMEOUT: {:?}",
        exit.took
    );
    assert!(!exit.stderr.contains("panicked"), "panic:\n{}", exit.stderr);
}

/// Started against the shared servers, the binary becomes ready on `addr_setting`, and on
/// SIGTERM stops within a few seconds with exit code 0.
pub fn assert_stops_cleanly_on_sigterm(binary: &str, addr_setting: &'static str) {
    let infra = shared();
    let port = free_port();
    let [creds, ca, redis_ca] =
        crate::nats_auth::auth().binary_settings(binary, &format!("sig{port}"));
    let (mut child, dir) = spawn_quiet(
        binary,
        &[
            ("NATS_URL", infra.nats.url()),
            ("NATS_NAMESPACE", format!("sig{port}")),
            creds,
            ca,
            redis_ca,
            ("EVENTS_MAX_BYTES", crate::context::STREAM_BYTES.into()),
            ("DEAD_LETTER_MAX_BYTES", crate::context::STREAM_BYTES.into()),
            ("MONGODB_URI", infra.mongo.uri()),
            ("REDIS_URL", infra.redis.url()),
            (addr_setting, format!("127.0.0.1:{port}")),
        ],
    );
    let ready = wait_until(Duration::from_secs(30), || {
        http_status(port, "/readyz") == Some(200)
    });
    if !ready {
        let _ = child.kill();
        panic!("{binary} did not become ready on {addr_setting}");
    }
    let status = sigterm_and_wait(&mut child, Duration::from_secs(15));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0), "{binary} exit status after SIGTERM");
}

/// SIGTERM while start-up is still waiting for an unreachable NATS ends the wait at once:
/// exit code 0 long before STARTUP_TIMEOUT.
pub fn assert_sigterm_interrupts_startup(binary: &str) {
    let infra = shared();
    let (mut child, dir) = spawn_quiet(
        binary,
        &[
            ("NATS_URL", format!("nats://127.0.0.1:{}", free_port())),
            ("MONGODB_URI", infra.mongo.uri()),
            ("REDIS_URL", infra.redis.url()),
            ("REDIS_TLS_CA_FILE", crate::nats_auth::auth().ca.clone()),
            ("STARTUP_TIMEOUT", "10m".into()),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = sigterm_and_wait(&mut child, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        status.code(),
        Some(0),
        "{binary} exit status after SIGTERM during start-up"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

fn spawn_quiet(
    binary: &str,
    settings: &[(&str, String)],
) -> (std::process::Child, std::path::PathBuf) {
    let dir = crate::process::scratch_dir("binary");
    let child = Command::new(binary)
        .env_clear()
        .current_dir(&dir)
        .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    (child, dir)
}

fn sigterm_and_wait(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A bare HTTP/1.1 GET (no async runtime needed here), returning the status code.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The settings of a deployment that replaced every public default, as `gcal-ops secrets
/// generate` writes them (with an OAuth client filled in, as its output asks).
pub fn generated_secrets() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    ops::secrets::generate(chrono::Utc::now(), &mut out).expect("generate");
    let text = String::from_utf8(out).expect("utf-8");
    let mut settings: Vec<(&'static str, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (leak(k), v.to_owned()))
        .collect();
    settings.push(("GOOGLE_CLIENT_ID", "a-registered-client".into()));
    settings.push(("GOOGLE_CLIENT_SECRET", "a-real-client-secret".into()));
    settings
}

fn leak(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}

/// On `0.0.0.0` with its public defaults (plus `extra`), the binary exits 78 before it
/// connects to anything, with one line per offending setting — exactly `offending` — and a
/// line saying how to proceed.
pub fn assert_refuses_public_defaults_off_loopback(
    binary: &str,
    addr_setting: &'static str,
    extra: &[(&str, String)],
    offending: &[&str],
) {
    let mut settings = vec![
        // Nothing listens here: a refusal must come before any connection attempt.
        ("NATS_URL", format!("nats://127.0.0.1:{}", free_port())),
        ("STARTUP_TIMEOUT", "30s".to_owned()),
        (addr_setting, format!("0.0.0.0:{}", free_port())),
    ];
    settings.extend(extra.iter().cloned());
    let exit = run_binary(binary, &settings, Duration::from_secs(20));
    assert_eq!(exit.code, Some(78), "exit code; stderr:\n{}", exit.stderr);
    let named: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.contains(": public default in effect"))
        .collect();
    assert_eq!(named.len(), offending.len(), "{}", exit.stderr);
    for setting in offending {
        assert!(
            named.iter().any(
                |l| l.contains(&format!(": {setting}: public default in effect"))
                    && l.contains(addr_setting)
            ),
            "{setting} not named in:\n{}",
            exit.stderr
        );
    }
    assert!(
        exit.stderr.contains("ALLOW_INSECURE_DEFAULTS=true"),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("unreachable"), "{}", exit.stderr);
}

/// With `ALLOW_INSECURE_DEFAULTS=true` the binary starts on `0.0.0.0` with its public
/// defaults, and logs an `INSECURE:` warning naming each of `insecure`.
pub fn assert_allowed_insecure_with_a_warning_each(
    binary: &str,
    addr_setting: &'static str,
    insecure: &[&str],
) {
    let logs = assert_serves_off_loopback(
        binary,
        addr_setting,
        &[("ALLOW_INSECURE_DEFAULTS", "true".into())],
    );
    for setting in insecure {
        assert!(
            logs.contains(&format!("INSECURE: {setting}: public default in effect")),
            "{setting}:\n{logs}"
        );
    }
}

/// With the secrets `gcal-ops secrets generate` writes, the binary serves on `0.0.0.0` and
/// warns about no public default.
pub fn assert_generated_secrets_serve_off_loopback(binary: &str, addr_setting: &'static str) {
    let logs = assert_serves_off_loopback(binary, addr_setting, &generated_secrets());
    assert!(!logs.contains("public default"), "{logs}");
}

/// Started on `0.0.0.0` against the shared servers with `settings`, the binary becomes ready;
/// returns what it logged until then (it is stopped afterwards).
pub fn assert_serves_off_loopback(
    binary: &str,
    addr_setting: &'static str,
    settings: &[(&str, String)],
) -> String {
    let infra = shared();
    let port = free_port();
    let [creds, ca, redis_ca] =
        crate::nats_auth::auth().binary_settings(binary, &format!("exp{port}"));
    let mut all = vec![
        ("NATS_URL", infra.nats.url()),
        ("NATS_NAMESPACE", format!("exp{port}")),
        creds,
        ca,
        redis_ca,
        ("EVENTS_MAX_BYTES", crate::context::STREAM_BYTES.into()),
        ("DEAD_LETTER_MAX_BYTES", crate::context::STREAM_BYTES.into()),
        ("MONGODB_URI", infra.mongo.uri()),
        ("REDIS_URL", infra.redis.url()),
        ("LOG_FORMAT", "json".to_owned()),
        (addr_setting, format!("0.0.0.0:{port}")),
    ];
    all.extend(settings.iter().cloned());
    let dir = crate::process::scratch_dir("exposed");
    let log_path = dir.join("service.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(binary)
        .env_clear()
        .current_dir(&dir)
        .envs(all.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    let ready = wait_until(Duration::from_secs(30), || {
        http_status(port, "/readyz") == Some(200)
    });
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ready, "{binary} did not become ready on 0.0.0.0:\n{logs}");
    logs
}
