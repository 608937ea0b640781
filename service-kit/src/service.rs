//! What every binary's `main` does: read configuration (reporting every problem at once),
//! set up logging, cancel on SIGTERM/SIGINT, run the service, and turn any start-up failure
//! into a clear message and a non-zero exit code — never a panic, never an endless hang.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{CommonConfig, ConfigError, Env, LogFormat};
use crate::exposure::{Exposure, Verdict};
use crate::startup::StartupError;

/// Exit code for invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a dependency that stayed unreachable, or any other start-up failure.
pub const EXIT_STARTUP: u8 = 1;

/// A service's configuration: it knows the common part.
pub trait ServiceConfig: Sized {
    /// The service's name: in logs and metrics, its NATS client name and its NATS identity
    /// (`schemas::bus_access::Identity::name`).
    const SERVICE: &'static str;

    /// Reads every setting from `env`; problems are collected in `env`, not returned.
    fn read(env: &mut Env) -> Self;
    fn common(&self) -> &CommonConfig;

    /// What the service listens on and which of its settings hold a public default; start-up
    /// refuses public defaults on a non-loopback address (see [`crate::exposure`]).
    fn exposure(&self) -> Exposure;

    /// Reads and validates in one go.
    fn from_env(mut env: Env) -> Result<Self, ConfigError> {
        let config = Self::read(&mut env);
        env.finish().map(|()| config)
    }
}

/// Runs a service binary. `run` receives the configuration and the shutdown token.
pub async fn main<C, F, Fut>(service: &'static str, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), StartupError>>,
{
    crate::tls::install_crypto_provider();
    without_transparent_huge_pages();
    let config = match C::from_env(Env::from_process()) {
        Ok(config) => config,
        Err(err) => {
            let _ = crate::telemetry::init(LogFormat::Text);
            eprintln!("{service}: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Before anything connects: a refused exposure must not touch the infrastructure.
    let verdict = config
        .exposure()
        .verdict(config.common().allow_insecure_defaults);
    if let Verdict::Refused(exposed) = &verdict {
        for line in exposed.to_string().lines() {
            eprintln!("{service}: {line}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    let telemetry = crate::telemetry::install(
        config.common().log_format,
        service,
        config.common().otlp_endpoint.as_ref(),
    );
    let shutdown = crate::shutdown::on_signal();
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        exporting_spans = telemetry.is_exporting(),
        "starting"
    );
    crate::exposure::log(service, &verdict);
    let result = run(config, shutdown).await;
    tokio::task::block_in_place(|| telemetry.shutdown());
    match result {
        Ok(()) => {
            tracing::info!(service, "stopped");
            ExitCode::SUCCESS
        }
        Err(StartupError::Interrupted) => {
            tracing::info!(service, "stopped during start-up");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(service, error = %err, "could not start");
            eprintln!("{service}: {err}");
            match err {
                StartupError::Config(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::from(EXIT_STARTUP),
            }
        }
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), also where the
/// kernel's mode is `always`. A service's heap is small and sparse: backed by 2 MiB pages, every
/// touched corner of an allocator arena was resident in full (12-16 MiB of each idle service,
/// tests/benches/memory.rs). mimalloc is built not to ask for them either (`no_thp`). A kernel
/// without the call (before 3.15) keeps its default: nothing else changes.
pub fn without_transparent_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[cfg(test)]
mod tests {
    #[test]
    fn transparent_huge_pages_end_up_off_for_the_process() {
        super::without_transparent_huge_pages();
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        // The line exists since Linux 6.7; before it, prctl's own answer says the same.
        match status.lines().find(|l| l.starts_with("THP_enabled:")) {
            Some(line) => assert!(line.ends_with('0'), "{line}"),
            None => assert!(
                rustix::thread::transparent_huge_pages_are_disabled().expect("prctl"),
                "still enabled"
            ),
        }
    }
}
