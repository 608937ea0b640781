//! Where the server binaries come from: `scripts/infra/install.sh` puts them in a cache
//! outside the repository (`$GCAL_TOOLS_DIR/bin`, default `~/.cache/gcal-connector/tools/bin`);
//! anything on `PATH` is used otherwise.

use std::path::PathBuf;

/// The directory install.sh fills.
pub fn tools_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GCAL_TOOLS_DIR") {
        return PathBuf::from(dir).join("bin");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("gcal-connector/tools/bin")
}

/// The path of `name`, or a panic that says how to install it.
pub fn binary(name: &str) -> PathBuf {
    let cached = tools_bin_dir().join(name);
    if cached.is_file() {
        return cached;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{name} not found in {} or on PATH: run scripts/infra/install.sh (the README's test command does)",
        tools_bin_dir().display()
    );
}
