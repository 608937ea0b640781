//! `gcal-ops`: parses the command line (usage errors exit 2), runs it, and turns an error into
//! a message on stderr and the exit code `ops::exit_code` gives it.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::tls::install_crypto_provider();
    let cli = ops::Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match ops::run(cli, &mut stdout).await {
        Ok(()) => ExitCode::from(ops::EXIT_OK),
        Err(err) => {
            eprintln!("gcal-ops: {err:#}");
            ExitCode::from(ops::exit_code(&err))
        }
    }
}
