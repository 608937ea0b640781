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
