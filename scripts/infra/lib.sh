# shellcheck shell=bash
# Shared by start.sh, stop.sh and status.sh (sourced, never run): where the local servers keep
# their data, logs and pid files, and the command line that runs each of them.
# The caller sets ROOT (the repository root) before sourcing this file.

# shellcheck source=scripts/infra/env.sh
source "$ROOT/scripts/infra/env.sh"

# Everything the local run writes stays under .local/ (git-ignored).
LOCAL_DIR="$ROOT/.local"
DATA_DIR="$LOCAL_DIR/data"
LOG_DIR="$LOCAL_DIR/logs"
RUN_DIR="$LOCAL_DIR/run"

# Loopback only: the local run is for this machine, never for the network.
BIND_HOST="127.0.0.1"
NATS_PORT="${NATS_PORT:-4222}"
NATS_MONITOR_PORT="${NATS_MONITOR_PORT:-8222}"
REDIS_PORT="${REDIS_PORT:-6379}"
MONGO_PORT="${MONGO_PORT:-27017}"
# WiredTiger cache ceiling for secantusd-rs (its own default is 4G; local data is tiny).
MONGO_CACHE_SIZE="${MONGO_CACHE_SIZE:-512M}"
# Passed explicitly so secantusd-rs never auto-discovers ./secantusd.toml, ~/.secantus/ or
# /etc/secantus/; start.sh creates it (nearly empty) when missing.
MONGO_CONFIG="$LOCAL_DIR/secantusd.toml"
# NATS decentralized auth of the local run, written once by `gcal-ops nats-auth generate`
# (start.sh): the server's configuration and one credentials file per service.
NATS_AUTH_DIR="$LOCAL_DIR/nats-auth"

# shellcheck disable=SC2034 # used by the scripts that source this file
SERVICES=(nats redis mongo)

say() { printf '%s\n' "$*"; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# The port that tells whether service $1 is up.
service_port() {
  case "$1" in
    nats) printf '%s' "$NATS_PORT" ;;
    redis) printf '%s' "$REDIS_PORT" ;;
    mongo) printf '%s' "$MONGO_PORT" ;;
  esac
}

# The environment variable that overrides service $1's port (for error messages).
service_port_var() {
  case "$1" in
    nats) printf 'NATS_PORT' ;;
    redis) printf 'REDIS_PORT' ;;
    mongo) printf 'MONGO_PORT' ;;
  esac
}

# Sets the global array CMD to the command line that runs service $1 in the foreground.
service_command() {
  case "$1" in
    nats)
      # -m: monitoring (/healthz, /jsz) on the same host as -a.
      # -c: operator-mode auth; anonymous clients are refused (see start.sh).
      CMD=(nats-server -c "$NATS_AUTH_DIR/nats-server.conf" -a "$BIND_HOST" -p "$NATS_PORT"
        -m "$NATS_MONITOR_PORT" -js -sd "$DATA_DIR/nats" -n gcal-local)
      ;;
    redis)
      # Redis holds the OAuth state of every link already mailed: it must outlive a restart.
      # Append-only file, fsynced before each answer, so a crash loses no acknowledged write.
      CMD=(redis-server --bind "$BIND_HOST" --port "$REDIS_PORT" --dir "$DATA_DIR/redis"
        --save "" --appendonly yes --appendfsync always --daemonize no --protected-mode yes)
      ;;
    mongo)
      # --sync-on-commit: the log is fsynced before a write is acknowledged. Without it an
      # acknowledged write can be lost when the server is killed (tests/tests/infrastructure.rs).
      CMD=(secantusd-rs --config "$MONGO_CONFIG" --host "$BIND_HOST" --port "$MONGO_PORT"
        --storage-path "$DATA_DIR/mongo" --cache-size "$MONGO_CACHE_SIZE" --sync-on-commit)
      ;;
  esac
}

# True if process $1 exists and is not a zombie waiting to be reaped.
process_alive() {
  local pid="$1" state
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    # Field 3 of /proc/PID/stat is the state; the command name before it may contain spaces.
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ "$state" != "Z" && "$state" != "X" ]] || return 1
  fi
  return 0
}

# Waits until process $1 has exited or SECONDS reaches $2, then SIGKILLs it if it is still
# there. Returns 0 if it exited by itself, 1 if it had to be killed, 2 if it survived SIGKILL.
await_exit_or_kill() {
  local pid="$1" deadline="$2"
  while process_alive "$pid" && ((SECONDS < deadline)); do
    sleep 0.2
  done
  process_alive "$pid" || return 0
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
  if process_alive "$pid"; then
    return 2
  fi
  return 1
}

# Prints the pid of service $1 and returns 0 if its pid file names a live process running the
# service's binary (so a recycled pid is not mistaken for our server).
running_pid() {
  local name="$1" pid_f pid exe want
  pid_f="$(pid_file "$name")"
  [[ -r "$pid_f" ]] || return 1
  pid="$(tr -dc '0-9' <"$pid_f")"
  [[ -n "$pid" ]] || return 1
  process_alive "$pid" || return 1
  if [[ -e "/proc/$pid/exe" ]]; then
    service_command "$name"
    exe="$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)"
    want="$(readlink -f "$(command -v "${CMD[0]}" 2>/dev/null || printf '%s' "${CMD[0]}")" 2>/dev/null || true)"
    if [[ -n "$exe" && -n "$want" && "$exe" != "$want" ]]; then
      return 1
    fi
  fi
  printf '%s' "$pid"
}

# True if something accepts TCP connections on $BIND_HOST:$1.
port_open() {
  (exec 3<>"/dev/tcp/$BIND_HOST/$1") 2>/dev/null
}
