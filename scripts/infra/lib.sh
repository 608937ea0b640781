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

# NATS comes in one of two shapes, chosen with NATS_CLUSTER (or start.sh --cluster):
#   single (NATS_CLUSTER unset or 0)  one node "nats": clients NATS_PORT, monitoring
#       NATS_MONITOR_PORT, JetStream store .local/data/nats
#   cluster (NATS_CLUSTER=1)  three nodes "nats-1".."nats-3" of one JetStream cluster: node N takes
#       clients on NATS_PORT+N-1 (4222-4224), routes on NATS_ROUTE_PORT+N-1 (6222-6224),
#       monitoring on NATS_MONITOR_PORT+N-1 (8222-8224), its store in .local/data/nats-N
# The stores are separate on purpose: a single node's store (streams with one replica, no cluster
# metadata) cannot join a cluster, so each shape keeps its own and switching needs no cleanup.
# Both shapes share the auth in .local/nats-auth/, Redis and MongoDB.
NATS_ROUTE_PORT="${NATS_ROUTE_PORT:-6222}"
NATS_CLUSTER_NAME="gcal-local"
NATS_SINGLE_NODES=(nats)
NATS_CLUSTER_NODES=(nats-1 nats-2 nats-3)
# Whether the caller chose a shape (stop.sh and status.sh otherwise go by what runs).
NATS_SHAPE_GIVEN=0
[[ -z "${NATS_CLUSTER:-}" ]] || NATS_SHAPE_GIVEN=1

# Sets NATS_CLUSTER (1 or 0), NATS_NODES (the shape's nodes), NATS_OTHER_NODES (the other shape's)
# and SERVICES (what start.sh starts) from $1: 1/true/yes/on for the cluster, 0/false/no/off or
# nothing for a single node. Fails on anything else.
# shellcheck disable=SC2034 # used by the scripts that source this file
select_nats_shape() {
  case "${1,,}" in
    1 | true | yes | on)
      NATS_CLUSTER=1
      NATS_NODES=("${NATS_CLUSTER_NODES[@]}")
      NATS_OTHER_NODES=("${NATS_SINGLE_NODES[@]}")
      ;;
    0 | false | no | off | "")
      NATS_CLUSTER=0
      NATS_NODES=("${NATS_SINGLE_NODES[@]}")
      NATS_OTHER_NODES=("${NATS_CLUSTER_NODES[@]}")
      ;;
    *) return 1 ;;
  esac
  SERVICES=("${NATS_NODES[@]}" redis mongo)
}
if ! select_nats_shape "${NATS_CLUSTER:-}"; then
  printf 'error: NATS_CLUSTER=%s: use 1 (a three-node NATS cluster) or 0 (one node)\n' "$NATS_CLUSTER" >&2
  exit 2
fi

# Without a shape chosen: the cluster when one of its nodes runs and the single node does not.
autodetect_nats_shape() {
  ((NATS_SHAPE_GIVEN)) && return 0
  local node
  running_pid nats >/dev/null && return 0
  for node in "${NATS_CLUSTER_NODES[@]}"; do
    if running_pid "$node" >/dev/null; then
      select_nats_shape 1
      return 0
    fi
  done
}

# True if $1 names a NATS node of either shape.
is_nats_node() {
  [[ "$1" == nats || "$1" =~ ^nats-[0-9]+$ ]]
}

# NATS node $1's ports: nats-N adds N-1 to the base port; the single node uses the base.
nats_offset() {
  if [[ "$1" =~ ^nats-([0-9]+)$ ]]; then
    printf '%s' $((BASH_REMATCH[1] - 1))
  else
    printf 0
  fi
}
nats_client_port() { printf '%s' $((NATS_PORT + $(nats_offset "$1"))); }
nats_monitor_port() { printf '%s' $((NATS_MONITOR_PORT + $(nats_offset "$1"))); }
nats_route_port() { printf '%s' $((NATS_ROUTE_PORT + $(nats_offset "$1"))); }

# NATS_URL for the chosen shape: the one node, or the three nodes as seeds.
nats_url() {
  local node urls=()
  for node in "${NATS_NODES[@]}"; do
    urls+=("nats://$BIND_HOST:$(nats_client_port "$node")")
  done
  (
    IFS=,
    printf '%s' "${urls[*]}"
  )
}

say() { printf '%s\n' "$*"; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# The port that tells whether service $1 is up.
service_port() {
  case "$1" in
    nats | nats-*) nats_client_port "$1" ;;
    redis) printf '%s' "$REDIS_PORT" ;;
    mongo) printf '%s' "$MONGO_PORT" ;;
  esac
}

# The environment variable that overrides service $1's port (for error messages).
service_port_var() {
  case "$1" in
    nats | nats-*) printf 'NATS_PORT' ;;
    redis) printf 'REDIS_PORT' ;;
    mongo) printf 'MONGO_PORT' ;;
  esac
}

# Sets the global array CMD to the command line that runs service $1 in the foreground.
service_command() {
  local node routes=()
  case "$1" in
    nats)
      # -m: monitoring (/healthz, /jsz) on the same host as -a.
      # -c: operator-mode auth; anonymous clients are refused (see start.sh).
      CMD=(nats-server -c "$NATS_AUTH_DIR/nats-server.conf" -a "$BIND_HOST" -p "$NATS_PORT"
        -m "$NATS_MONITOR_PORT" -js -sd "$DATA_DIR/nats" -n gcal-local)
      ;;
    nats-*)
      # A cluster node: the same auth, its own ports and store, routes to the two others
      # (routes carry no auth: loopback only).
      for node in "${NATS_CLUSTER_NODES[@]}"; do
        [[ "$node" == "$1" ]] || routes+=("nats-route://$BIND_HOST:$(nats_route_port "$node")")
      done
      CMD=(nats-server -c "$NATS_AUTH_DIR/nats-server.conf" -a "$BIND_HOST"
        -p "$(nats_client_port "$1")" -m "$(nats_monitor_port "$1")" -js -sd "$DATA_DIR/$1" -n "$1"
        --cluster_name "$NATS_CLUSTER_NAME" --cluster "nats://$BIND_HOST:$(nats_route_port "$1")"
        --routes "$(IFS=, && printf '%s' "${routes[*]}")")
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

# GET http://$BIND_HOST:$1$2 (a NATS monitoring port): prints the body, fails unless 200. Uses
# curl, or bash's /dev/tcp when curl is missing.
monitor_get() {
  local out
  if command -v curl >/dev/null 2>&1; then
    curl -sf --connect-timeout 2 --max-time 3 "http://$BIND_HOST:$1$2" 2>/dev/null
    return
  fi
  # shellcheck disable=SC2016 # expanded by the inner bash
  out="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
    cat <&3' "$BIND_HOST" "$1" "$2" 2>/dev/null)" || return 1
  [[ "${out%%$'\r'*}" =~ ^HTTP/1\.[01]\ 200 ]] || return 1
  printf '%s' "${out#*$'\r\n\r\n'}"
}

# How many other nodes cluster node $1 has routes to (0 when its monitoring does not answer).
nats_route_peers() {
  local body
  body="$(monitor_get "$(nats_monitor_port "$1")" /routez)" || {
    printf 0
    return 0
  }
  # Several connections per peer (route pooling): count the peers' names.
  grep -o '"remote_name": *"[^"]*"' <<<"$body" | sort -u | wc -l | tr -d ' '
}
