//! The chaos run (`e2e::chaos`): connect flows on the cluster shape while processes are
//! SIGKILLed and restarted, then the checks. In the suite it drives a few flows
//! (`CHAOS_FLOWS`, 150 by default); the figures in docs/failure-behaviour.md come from
//!
//! ```text
//! CHAOS_FLOWS=1000 CHAOS_REPORT=chaos-report.md scripts/test.sh -p e2e --test chaos
//! ```
//!
//! The report (`CHAOS_REPORT`, default `$TMPDIR/chaos-report.md`) lists every kill and every
//! failed check with the request and correlation ids around it; the exit code says whether
//! every check passed.
//!
//! The binary is also each service replica: `chaos serve <service>` runs the service's
//! `main_from_env`, the code of its real binary, so the run needs no other build.

use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flows when `CHAOS_FLOWS` is not set: enough for a few kills, well inside CI's time.
const DEFAULT_FLOWS: usize = 150;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve(args.get(1).map(String::as_str).unwrap_or_default());
    }
    // Filters and flags from `cargo test` name no test of ours to skip: there is one.
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(chaos())
}

async fn chaos() -> ExitCode {
    let options = match e2e::chaos::Options::from_env(DEFAULT_FLOWS) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let program = std::env::current_exe().expect("the test binary's path");
    let sink = PathBuf::from(env!("CARGO_BIN_EXE_dev-smtp-sink"));
    eprintln!(
        "chaos: {} flows, {} users, seed {}; report {}",
        options.flows,
        options.users,
        options.seed,
        options.report.display()
    );
    match e2e::chaos::run(&options, program, vec!["serve".into()], sink).await {
        Ok(outcome) => {
            for check in &outcome.report.checks {
                eprintln!(
                    "chaos: [{}] {}: {}",
                    if check.passed { "ok" } else { "FAILED" },
                    check.name,
                    check.summary
                );
            }
            eprintln!("chaos: report in {}", options.report.display());
            // The suite's summary (scripts/test.sh) counts libtest's result lines.
            let (passed, failed) = if outcome.passed { (1, 0) } else { (0, 1) };
            println!(
                "test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
                if outcome.passed { "ok" } else { "FAILED" }
            );
            if outcome.passed {
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", outcome.report.text());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: the run could not be carried out: {e}");
            println!(
                "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            );
            ExitCode::FAILURE
        }
    }
}

/// One service replica, as its binary runs it.
fn serve(service: &str) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        match service {
            "api" => api::main_from_env().await,
            "oauth-worker" => oauth_worker::main_from_env().await,
            "metadata-worker" => metadata_worker::main_from_env().await,
            "mailer-worker" => mailer_worker::main_from_env().await,
            other => {
                eprintln!("chaos serve: no service {other:?}");
                ExitCode::from(2)
            }
        }
    })
}
