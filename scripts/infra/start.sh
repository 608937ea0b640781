#!/usr/bin/env bash
# Starts NATS (JetStream), Redis and the MongoDB-wire server (secantusd-rs) in the background on
# loopback for the local no-configuration run, and waits until each accepts connections.
#
#   scripts/infra/start.sh             one NATS node ("nats")
#   scripts/infra/start.sh --cluster   three NATS nodes in one JetStream cluster (also: NATS_CLUSTER=1)
#
#   data  .local/data/{nats,redis,mongo}    logs  .local/logs/*.log    pids  .local/run/*.pid
#
# The cluster: nodes nats-1, nats-2, nats-3 (cluster gcal-local) with clients on 4222, 4223, 4224
# (NATS_PORT+0..2), routes on 6222-6224 (NATS_ROUTE_PORT+0..2), monitoring on 8222-8224
# (NATS_MONITOR_PORT+0..2); data, log and pid files nats-1..3. It is ready once every node
# answers /healthz (routed, JetStream meta leader elected). Each shape keeps its own JetStream
# store (.local/data/nats for one node, .local/data/nats-1..3 for the cluster): a single node's
# store cannot join a cluster. Switching shapes: stop NATS (scripts/infra/stop.sh stops either)
# and start the other; Redis and MongoDB are shared, messages in flight stay in the store of the
# shape that took them. Only one shape runs at a time (they share ports 4222 and 8222).
#
# Idempotent: a server whose pid file names a live process is left alone.
#
# NATS runs with auth on: the first start writes .local/nats-auth/ with `gcal-ops nats-auth
# generate` (an operator, the permissions of NATS_NAMESPACE, one .creds file per identity); every
# client needs its identity's file (NATS_CREDS_FILE), anonymous clients are refused. The local run
# stays plaintext on loopback. GCAL_OPS names a built gcal-ops binary (else `cargo run` builds it).
# The permissions are those of NATS_NAMESPACE at the first run: after changing it, remove
# .local/nats-auth/ (and restart NATS) so they are written again.
# Environment: NATS_PORT (4222), NATS_MONITOR_PORT (8222), NATS_ROUTE_PORT (6222, cluster only),
#              NATS_CLUSTER (0; 1 = --cluster), REDIS_PORT (6379), MONGO_PORT (27017),
#              MONGO_CACHE_SIZE (512M), START_TIMEOUT seconds to wait for each server (30).
# The binaries come from scripts/infra/install.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/infra/lib.sh
source "$ROOT/scripts/infra/lib.sh"

START_TIMEOUT="${START_TIMEOUT:-30}"

die() {
  printf 'start.sh: error: %s\n' "$*" >&2
  exit 1
}

# Prints what service $1 logged since this start to stderr.
show_log_tail() {
  local log_f
  log_f="$(log_file "$1")"
  if [[ -s "$log_f" ]]; then
    printf -- '--- %s (this start only, last 40 lines) ---\n' "$log_f" >&2
    # Everything after the last "==== ... start.sh:" marker that launch() writes.
    awk '/^==== .* start\.sh: /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$log_f" \
      | tail -n 40 >&2 || true
    printf -- '---\n' >&2
  fi
}

# Services to launch in this run (the others already run).
TO_START=()

# Decides whether service $1 needs starting, and fails before anything is launched if it cannot
# start (binary missing, port taken by someone else).
preflight() {
  local name="$1" port pid
  port="$(service_port "$name")"
  if pid="$(running_pid "$name")"; then
    say "$name: already running (pid $pid, $BIND_HOST:$port)"
    return 0
  fi
  service_command "$name"
  command -v "${CMD[0]}" >/dev/null 2>&1 \
    || die "$name: ${CMD[0]} not found on PATH ($TOOLS_DIR/bin); run scripts/infra/install.sh first"
  # A cluster node's ports follow the base settings (nats-2: base + 1).
  local offset=""
  [[ "$name" == nats-* ]] && offset=" (node $name uses it + $(nats_offset "$name"))"
  if port_open "$port"; then
    die "$name: $BIND_HOST:$port is already in use by a process not started by this script;" \
      "stop it or choose another port with $(service_port_var "$name")=<port>$offset"
  fi
  if is_nats_node "$name" && port_open "$(nats_monitor_port "$name")"; then
    die "$name: monitoring port $BIND_HOST:$(nats_monitor_port "$name") is already in use;" \
      "choose another with NATS_MONITOR_PORT=<port>$offset"
  fi
  if [[ "$name" == nats-* ]] && port_open "$(nats_route_port "$name")"; then
    die "$name: route port $BIND_HOST:$(nats_route_port "$name") is already in use;" \
      "choose another with NATS_ROUTE_PORT=<port>$offset"
  fi
  TO_START+=("$name")
}

# Fails if NATS runs in the other shape: both take NATS_PORT and NATS_MONITOR_PORT.
check_other_shape() {
  local node pid
  for node in "${NATS_OTHER_NODES[@]}"; do
    if pid="$(running_pid "$node")"; then
      if ((NATS_CLUSTER)); then
        die "NATS runs as one node ($node, pid $pid); this start wants the three-node cluster." \
          "Stop it first: scripts/infra/stop.sh (both shapes keep their data)"
      fi
      die "NATS runs as a three-node cluster ($node, pid $pid); this start wants one node." \
        "Stop it first: scripts/infra/stop.sh (both shapes keep their data)"
    fi
  done
}

# Launches service $1 in its own session, detached from this shell.
launch() {
  local name="$1" pid pid_f log_f
  pid_f="$(pid_file "$name")"
  log_f="$(log_file "$name")"
  rm -f "$pid_f"
  service_command "$name"
  mkdir -p "$DATA_DIR/$name"
  if [[ "$name" == mongo && ! -e "$MONGO_CONFIG" ]]; then
    printf '%s\n' "# secantusd-rs settings for the local run (see: secantusd-rs --help)." \
      "# The flags in scripts/infra/lib.sh override anything set here." >"$MONGO_CONFIG"
  fi
  printf '\n==== %s start.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${CMD[*]}" >>"$log_f"
  # setsid: own session, so Ctrl-C or closing this terminal does not reach the server.
  # In a non-interactive shell setsid execs in place, so $! is the server's own pid.
  setsid nohup "${CMD[@]}" >>"$log_f" 2>&1 </dev/null &
  pid=$!
  # Not a job of this shell: no "Killed" notices, and it outlives the script.
  disown "$pid"
  printf '%s\n' "$pid" >"$pid_f"
}

# Waits until service $1 accepts TCP connections; fails with its log if it exits or times out.
wait_ready() {
  local name="$1" port pid pid_f deadline
  port="$(service_port "$name")"
  pid_f="$(pid_file "$name")"
  pid="$(tr -dc '0-9' <"$pid_f")"
  deadline=$((SECONDS + START_TIMEOUT))
  while true; do
    if ! process_alive "$pid"; then
      rm -f "$pid_f"
      show_log_tail "$name"
      die "$name: exited during startup (see $(log_file "$name"))"
    fi
    if port_open "$port" && { ! is_nats_node "$name" || port_open "$(nats_monitor_port "$name")"; }; then
      break
    fi
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$pid_f"
      show_log_tail "$name"
      die "$name: not accepting connections on $BIND_HOST:$port after ${START_TIMEOUT}s; killed it"
    fi
    sleep 0.2
  done
  say "$name: started (pid $pid, $BIND_HOST:$port) log $(log_file "$name")"
}

# Cluster: waits until every node answers /healthz (200 once it is routed and JetStream has a
# meta leader) and has routes to both others.
wait_cluster() {
  local node deadline=$((SECONDS + START_TIMEOUT)) pending
  while true; do
    pending=()
    for node in "${NATS_NODES[@]}"; do
      if ! monitor_get "$(nats_monitor_port "$node")" /healthz >/dev/null \
        || (($(nats_route_peers "$node") < ${#NATS_NODES[@]} - 1)); then
        pending+=("$node")
      fi
    done
    ((${#pending[@]} > 0)) || break
    if ((SECONDS >= deadline)); then
      for node in "${pending[@]}"; do
        show_log_tail "$node"
      done
      die "nats cluster: ${pending[*]} not healthy (routes to the other nodes, JetStream meta" \
        "leader) after ${START_TIMEOUT}s; the nodes are left running (scripts/infra/stop.sh)"
    fi
    sleep 0.5
  done
  say "nats cluster $NATS_CLUSTER_NAME: ${NATS_NODES[*]} routed, JetStream ready"
}

# Writes the local NATS auth once (kept across runs: the services' credentials stay valid).
ensure_nats_auth() {
  [[ -s "$NATS_AUTH_DIR/nats-server.conf" ]] && return 0
  say "nats: writing NATS credentials and permissions to $NATS_AUTH_DIR"
  local ops=("${GCAL_OPS:-}")
  if [[ -z "${GCAL_OPS:-}" ]]; then
    ops=(cargo run -q -p ops --bin gcal-ops --)
  fi
  # --api-reads-events: the try-it page of a local run shows each connection's events.
  (cd "$ROOT" && "${ops[@]}" nats-auth generate --out "$NATS_AUTH_DIR" --api-reads-events >/dev/null) \
    || die "nats: gcal-ops nats-auth generate failed"
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

main() {
  while (($# > 0)); do
    case "$1" in
      --cluster) select_nats_shape 1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        printf 'start.sh: error: unknown option: %s (see scripts/infra/start.sh --help)\n' "$1" >&2
        exit 2
        ;;
    esac
    shift
  done
  mkdir -p "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
  ensure_nats_auth
  check_other_shape
  local name
  for name in "${SERVICES[@]}"; do
    preflight "$name"
  done
  # Launch all first, then wait: the servers start in parallel (the cluster's nodes find each other).
  for name in "${TO_START[@]}"; do
    launch "$name"
  done
  for name in "${TO_START[@]}"; do
    wait_ready "$name"
  done
  if ((NATS_CLUSTER)); then
    wait_cluster
  fi
  say ""
  say "export NATS_URL=$(nats_url)"
  say "export NATS_CREDS_FILE=$NATS_AUTH_DIR/creds/<identity>.creds   # operator, for gcal-ops"
  say "export REDIS_URL=redis://$BIND_HOST:$REDIS_PORT"
  say "export MONGODB_URI=mongodb://$BIND_HOST:$MONGO_PORT"
  if ((NATS_CLUSTER)); then
    local node monitors=()
    for node in "${NATS_NODES[@]}"; do
      monitors+=("http://$BIND_HOST:$(nats_monitor_port "$node")")
    done
    say "(NATS monitoring: ${monitors[*]}; stop with scripts/infra/stop.sh)"
  else
    say "(NATS monitoring: http://$BIND_HOST:$NATS_MONITOR_PORT; stop with scripts/infra/stop.sh)"
  fi
}

main "$@"
