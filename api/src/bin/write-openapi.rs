//! Writes the api's OpenAPI document to `api/openapi.json` (or the path given), exactly as
//! `GET /openapi.json` serves it. Run after changing a route, its types or its failures:
//!
//! ```sh
//! cargo run -p api --bin write-openapi
//! ```
//!
//! `--check` writes nothing and exits 1 when the file differs.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: write-openapi [--check] [PATH]  (default {})",
                    path.display()
                );
                return ExitCode::SUCCESS;
            }
            other => path = PathBuf::from(other),
        }
    }
    let spec = api::openapi::to_json();
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == spec {
            println!("{} is up to date", path.display());
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "{} differs from the generated document; run `cargo run -p api --bin write-openapi`",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    match std::fs::write(&path, spec) {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
