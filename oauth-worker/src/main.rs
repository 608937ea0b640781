use std::process::ExitCode;

/// mimalloc instead of glibc malloc: in tests/benches/connect.rs it cut the api's CPU per
/// request by ~18 % and the oauth-worker's by ~14 %. (The ~12 MiB more RSS it seemed to cost
/// were transparent huge pages backing its arenas, now off: see `service_kit::service`.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    oauth_worker::main_from_env().await
}
