//! The `gcal-ops` binary's exit codes for what fails before any stream is read: a command line
//! that does not parse (2), an invalid setting (78), an unreachable NATS (1). No server needed.

use std::net::TcpListener;
use std::process::{Command, Output};

fn gcal_ops(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gcal-ops"));
    // A directory without a `.env`, and no inherited settings.
    command
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("NATS_URL")
        .env_remove("NATS_NAMESPACE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("gcal-ops runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_command_line_that_does_not_parse_exits_2() {
    let out = gcal_ops(&["dlq", "replay"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--all"),
        "says what is missing: {}",
        stderr(&out)
    );
    let out = gcal_ops(&["dlq", "list", "--since", "yesterday"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
}

#[test]
fn an_invalid_setting_exits_78_naming_it_without_its_value() {
    let out = gcal_ops(
        &["dlq", "list"],
        &[
            ("NATS_URL", "nats://user:s3cr3t@[::1"),
            ("NATS_NAMESPACE", "a.b"),
        ],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("NATS_URL") && err.contains("NATS_NAMESPACE"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn an_unreachable_nats_exits_1_naming_the_setting() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = gcal_ops(
        &[
            "--nats-url",
            &url,
            "--connect-timeout",
            "300ms",
            "dlq",
            "list",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("NATS_URL"),
        "{err}"
    );
}
