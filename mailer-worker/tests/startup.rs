//! The mailer-worker binary refuses bad configuration and unreachable infrastructure clearly.

#[test]
fn malformed_settings_exit_78_naming_every_one() {
    e2e::startup::assert_rejects_malformed_settings(env!("CARGO_BIN_EXE_mailer-worker"));
}

#[test]
fn unreachable_nats_exits_1_after_the_startup_timeout_naming_nats_url() {
    e2e::startup::assert_gives_up_on_unreachable_nats(env!("CARGO_BIN_EXE_mailer-worker"));
}

#[test]
fn sigterm_stops_it_cleanly_with_exit_code_0() {
    e2e::startup::assert_stops_cleanly_on_sigterm(
        env!("CARGO_BIN_EXE_mailer-worker"),
        "MAILER_WORKER_HEALTH_ADDR",
    );
}

#[test]
fn sigterm_during_startup_exits_0_without_waiting_for_the_timeout() {
    e2e::startup::assert_sigterm_interrupts_startup(env!("CARGO_BIN_EXE_mailer-worker"));
}

/// The mailer has no setting with a public default: it serves on any address as it is.
#[test]
fn it_serves_off_loopback_with_its_defaults() {
    let logs = e2e::startup::assert_serves_off_loopback(
        env!("CARGO_BIN_EXE_mailer-worker"),
        "MAILER_WORKER_HEALTH_ADDR",
        &[],
    );
    assert!(!logs.contains("public default"), "{logs}");
}
