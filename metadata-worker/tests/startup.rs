//! The metadata-worker binary refuses bad configuration and unreachable infrastructure clearly.

#[test]
fn malformed_settings_exit_78_naming_every_one() {
    e2e::startup::assert_rejects_malformed_settings(env!("CARGO_BIN_EXE_metadata-worker"));
}

#[test]
fn unreachable_nats_exits_1_after_the_startup_timeout_naming_nats_url() {
    e2e::startup::assert_gives_up_on_unreachable_nats(env!("CARGO_BIN_EXE_metadata-worker"));
}

#[test]
fn sigterm_stops_it_cleanly_with_exit_code_0() {
    e2e::startup::assert_stops_cleanly_on_sigterm(
        env!("CARGO_BIN_EXE_metadata-worker"),
        "METADATA_WORKER_HEALTH_ADDR",
    );
}

#[test]
fn sigterm_during_startup_exits_0_without_waiting_for_the_timeout() {
    e2e::startup::assert_sigterm_interrupts_startup(env!("CARGO_BIN_EXE_metadata-worker"));
}

#[test]
fn public_defaults_off_loopback_exit_78_naming_each() {
    e2e::startup::assert_refuses_public_defaults_off_loopback(
        env!("CARGO_BIN_EXE_metadata-worker"),
        "METADATA_WORKER_HEALTH_ADDR",
        &[],
        &["WEBHOOK_SECRET_KEYS"],
    );
}

#[test]
fn allow_insecure_defaults_starts_it_off_loopback_with_a_warning_per_setting() {
    e2e::startup::assert_allowed_insecure_with_a_warning_each(
        env!("CARGO_BIN_EXE_metadata-worker"),
        "METADATA_WORKER_HEALTH_ADDR",
        &["WEBHOOK_SECRET_KEYS"],
    );
}

#[test]
fn generated_secrets_serve_off_loopback_without_a_public_default() {
    e2e::startup::assert_generated_secrets_serve_off_loopback(
        env!("CARGO_BIN_EXE_metadata-worker"),
        "METADATA_WORKER_HEALTH_ADDR",
    );
}
