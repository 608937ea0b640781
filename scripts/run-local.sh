#!/usr/bin/env bash
# Runs the whole connector on this machine, on loopback, with no configuration:
#
#   scripts/run-local.sh              install/start NATS, Redis and MongoDB (secantusd-rs), build the
#                                     four services and the local SMTP sink, start them, wait until
#                                     each is ready, then stay in the foreground; Ctrl-C stops everything
#   scripts/run-local.sh --detach     the same, but exit once everything is ready and leave it running
#   scripts/run-local.sh --stop       stop what a --detach run (or a running run-local.sh) started
#   scripts/run-local.sh --cluster    the cluster shape: three NATS nodes and two replicas of each
#                                     service (see "Cluster shape" below); combines with the others
#
# Options:
#   --release     build and run the release binaries (default: debug)
#   --keep-infra  on exit (or with --stop) leave NATS, Redis and MongoDB running
#   --detach      start everything, print the summary and exit 0, leaving it running
#   --stop        stop the services, then the infrastructure (of either shape)
#   --cluster     three NATS nodes, two replicas of every service (also: NATS_CLUSTER=1)
#   -h, --help    this text
#
#   services  .local/logs/<service>.log    .local/run/<service>.pid   (dev-smtp-sink too)
#   infra     .local/logs/{nats,redis,mongo}.log and .local/data/ (see scripts/infra/start.sh)
#
# Cluster shape (--cluster), all on loopback:
#   NATS     nats-1, nats-2, nats-3 in one JetStream cluster (scripts/infra/start.sh --cluster):
#            clients 4222-4224, routes 6222-6224, monitoring 8222-8224; the services get the three
#            as seeds in NATS_URL (unless NATS_URL is set) and make their streams with 3 replicas
#            (STREAM_REPLICAS=auto). Its JetStream store is .local/data/nats-1..3, apart from the
#            single node's .local/data/nats (a single node's store cannot join a cluster): switch
#            shapes with --stop in between; Redis and MongoDB are the same in both.
#   services api-1/api-2 share API_HTTP_ADDR (3002) and oauth-worker-1/-2 share
#            OAUTH_WORKER_HTTP_ADDR (3004, the OAuth callback) through SO_REUSEPORT
#            (API_HTTP_REUSE_PORT / OAUTH_WORKER_HTTP_REUSE_PORT=true): the kernel spreads new
#            connections over the replicas that listen, and a replica joins only once its
#            dependencies are connected. metadata-worker-1/-2 answer on 3005 and 3015,
#            mailer-worker-1/-2 on 3006 and 3016 (METADATA_WORKER_2_HEALTH_ADDR,
#            MAILER_WORKER_2_HEALTH_ADDR). dev-smtp-sink and fake-google stay single.
#   files    .local/run/api-1.pid, .local/logs/api-1.log, ... one pair per replica; nats-1..3.
#   ready    a replica on a shared address once its log since its start says "listening" and the
#            address answers /readyz 200; a worker replica by its own /readyz.
#   in the foreground, a replica that exits is reported and the run goes on while another replica
#   of its service runs. Try it: kill -9 "$(cat .local/run/api-1.pid)", then
#   curl http://127.0.0.1:3002/readyz keeps answering 200 (from api-2).
#
# The services read their settings from the environment and from a .env file in the repository
# root (they run from there), with loopback defaults. This script reads the same places only to
# find each service's address (API_HTTP_ADDR, OAUTH_WORKER_HTTP_ADDR, METADATA_WORKER_HEALTH_ADDR,
# MAILER_WORKER_HEALTH_ADDR).
#
# Local Google: with no GOOGLE_CLIENT_ID configured, fake-google (a binary of the e2e package that
# speaks Google's OAuth protocol) is started on 127.0.0.1:3010 (FAKE_GOOGLE_ADDR) and the
# oauth-worker is pointed at it, so a link from the api opens a local consent page.
#
# Local mail: dev-smtp-sink (a real SMTP server, a binary of the e2e package) is started before
# the services on 127.0.0.1:1025, where the mailer-worker sends by default. It prints every email
# to .local/logs/dev-smtp-sink.log and shows them at http://127.0.0.1:8025/ (JSON: /messages).
# DEV_SMTP_SINK_HTTP_ADDR moves the page; DEV_SMTP_SINK_SMTP_ADDR moves the SMTP port (then set
# SMTP_URL=smtp://<that address> too). When SMTP_URL points anywhere else, the sink is not started.
#
# Try-it page: the api runs with API_DEV_MODE=true (unless set, or unless JWT_ALGORITHM names an
# identity provider's RS256/ES256, whose tokens the api cannot mint), so http://127.0.0.1:3002/
# serves a page that connects a calendar in the browser. FRONTEND_REDIRECT_URL (unless set) brings
# the browser back to that page after consent; DEV_SMTP_SINK_URL (unless set) is the sink's page.
#
# Environment of this script:
#   READY_TIMEOUT          seconds to wait for every service's /readyz to return 200 (60)
#   SERVICE_STOP_TIMEOUT   seconds a service gets to exit after SIGTERM before SIGKILL (25)
#   NATS_PORT, REDIS_PORT, MONGO_PORT   infrastructure ports (see scripts/infra/start.sh); when
#                          set, NATS_URL / REDIS_URL / MONGODB_URI follow unless set themselves
#                          (--cluster: NATS_PORT, NATS_ROUTE_PORT, NATS_MONITOR_PORT are the
#                          first node's; the others take the next two ports)
#   NATS_CLUSTER           1: the same as --cluster
#   METADATA_WORKER_2_HEALTH_ADDR, MAILER_WORKER_2_HEALTH_ADDR   --cluster: the second worker
#                          replicas' health addresses (127.0.0.1:3015, 127.0.0.1:3016)
#   CARGO_TARGET_DIR       where cargo puts the binaries (target/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Infrastructure ports chosen for start.sh also apply to the services (unless given explicitly);
# NATS_URL once the shape is known (configure_nats_url).
NATS_PORT_GIVEN="${NATS_PORT:+1}"
if [[ -n "${REDIS_PORT:-}" && -z "${REDIS_URL:-}" ]]; then
  export REDIS_URL="redis://127.0.0.1:${REDIS_PORT}"
fi
if [[ -n "${MONGO_PORT:-}" && -z "${MONGODB_URI:-}" ]]; then
  export MONGODB_URI="mongodb://127.0.0.1:${MONGO_PORT}"
fi

# Directories, ports of the infrastructure, pid_file/log_file, process_alive; also TOOLS_DIR/PATH.
# shellcheck source=scripts/infra/lib.sh
source "$ROOT/scripts/infra/lib.sh"

# The local SMTP sink first, so it listens before the mailer-worker sends; left out of a start
# when SMTP_URL points elsewhere (start_all), always looked for when stopping.
SINK=dev-smtp-sink
# The fake Google (a binary of the e2e package) stands in for Google when no GOOGLE_CLIENT_ID is
# configured, so the whole connect flow can be tried in a browser with no credentials.
FAKE_GOOGLE=fake-google
# The four services; --cluster runs REPLICAS of each, named <service>-1, <service>-2.
SERVICE_NAMES=(api oauth-worker metadata-worker mailer-worker)
REPLICAS=2
SINGLE_PROCESSES=("$SINK" "$FAKE_GOOGLE" "${SERVICE_NAMES[@]}")
CLUSTER_PROCESSES=("$SINK" "$FAKE_GOOGLE")
for _service in "${SERVICE_NAMES[@]}"; do
  for ((_replica = 1; _replica <= REPLICAS; _replica++)); do
    CLUSTER_PROCESSES+=("$_service-$_replica")
  done
done
unset _service _replica
# What this run starts (the shape's processes, set in main); --stop looks for both shapes'.
ALL_PROCESSES=("${SINGLE_PROCESSES[@]}")
KNOWN_PROCESSES=("${SINGLE_PROCESSES[@]}" "${CLUSTER_PROCESSES[@]:2}")
APP_SERVICES=("${ALL_PROCESSES[@]}")
READY_TIMEOUT="${READY_TIMEOUT:-60}"
SERVICE_STOP_TIMEOUT="${SERVICE_STOP_TIMEOUT:-25}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
# Pid of the run-local.sh that is starting or running the services (for --stop and double starts).
RUNNER_PID_FILE="$RUN_DIR/run-local.pid"

PROFILE=debug
KEEP_INFRA=0
MODE=foreground # foreground | detach | stop
# 1 for the cluster shape (--cluster or NATS_CLUSTER=1; lib.sh read the latter).
CLUSTER="$NATS_CLUSTER"

# State for the exit trap.
CLEANUP_ON_EXIT=0    # set once this run owns something to clean up
INFRA_STARTED=0      # start.sh was run by this invocation
INFRA_WAS_RUNNING=0  # all three servers were already up before start.sh

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

log() { printf 'run-local: %s\n' "$*"; }
err() { printf 'run-local: error: %s\n' "$*" >&2; }
die() {
  err "$@"
  exit 1
}

# --- service facts -------------------------------------------------------------------------------

# The service (and binary) that process $1 runs: a replica's (api-2: api), else its own name.
service_of() {
  if [[ "$1" =~ ^(api|oauth-worker|metadata-worker|mailer-worker)-[0-9]+$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
  else
    printf '%s' "$1"
  fi
}

# The replica number of process $1 (api-2: 2); 1 for a process that is not a replica.
replica_of() {
  if [[ "$(service_of "$1")" != "$1" ]]; then
    printf '%s' "${1##*-}"
  else
    printf 1
  fi
}

# True when process $1 is a replica that shares its service's address with the other replicas
# (SO_REUSEPORT): the api's and the oauth-worker's.
shares_addr() {
  [[ "$1" =~ ^(api|oauth-worker)-[0-9]+$ ]]
}

# The setting that holds process $1's listen address, and its built-in default. The api's and
# oauth-worker's replicas share one; a worker's replica N > 1 has its own, 10 * (N - 1) ports up.
addr_setting() {
  local n
  n="$(replica_of "$1")"
  case "$(service_of "$1")" in
    api) printf 'API_HTTP_ADDR' ;;
    oauth-worker) printf 'OAUTH_WORKER_HTTP_ADDR' ;;
    metadata-worker) ((n > 1)) && printf 'METADATA_WORKER_%s_HEALTH_ADDR' "$n" || printf 'METADATA_WORKER_HEALTH_ADDR' ;;
    mailer-worker) ((n > 1)) && printf 'MAILER_WORKER_%s_HEALTH_ADDR' "$n" || printf 'MAILER_WORKER_HEALTH_ADDR' ;;
    dev-smtp-sink) printf 'DEV_SMTP_SINK_HTTP_ADDR' ;;
    fake-google) printf 'FAKE_GOOGLE_ADDR' ;;
  esac
}
addr_default() {
  local n
  n="$(replica_of "$1")"
  case "$(service_of "$1")" in
    api) printf '127.0.0.1:3002' ;;
    oauth-worker) printf '127.0.0.1:3004' ;;
    metadata-worker) printf '127.0.0.1:%s' $((3005 + 10 * (n - 1))) ;;
    mailer-worker) printf '127.0.0.1:%s' $((3006 + 10 * (n - 1))) ;;
    dev-smtp-sink) printf '127.0.0.1:8025' ;;
    fake-google) printf '127.0.0.1:3010' ;;
  esac
}

# The settings process $1 gets on top of the environment and .env, one NAME=value a line: a
# replica on a shared address joins it with SO_REUSEPORT; a worker's replica N > 1 is told its
# own health address.
replica_env() {
  shares_addr "$1" || [[ "$(replica_of "$1")" -gt 1 ]] || return 0
  case "$(service_of "$1")" in
    api) printf '%s\n' API_HTTP_REUSE_PORT=true ;;
    oauth-worker) printf '%s\n' OAUTH_WORKER_HTTP_REUSE_PORT=true ;;
    metadata-worker)
      resolve_addr "$1"
      printf 'METADATA_WORKER_HEALTH_ADDR=%s\n' "$ADDR"
      ;;
    mailer-worker)
      resolve_addr "$1"
      printf 'MAILER_WORKER_HEALTH_ADDR=%s\n' "$ADDR"
      ;;
  esac
}

# Where the services find NATS: NATS_URL as configured; else the cluster's three seeds, or the
# one node on NATS_PORT when that was given.
configure_nats_url() {
  if ((CLUSTER)); then
    if [[ -n "$(setting_value NATS_URL)" ]]; then
      log "NATS_URL is configured ($(setting_value NATS_URL)): the services use it, not the cluster's seeds"
    else
      NATS_URL="$(nats_url)"
      export NATS_URL
    fi
  elif [[ -n "$NATS_PORT_GIVEN" && -z "${NATS_URL:-}" ]]; then
    export NATS_URL="nats://127.0.0.1:${NATS_PORT}"
  fi
}

# True when no real provider is configured: the fake Google is started and the oauth-worker
# pointed at it.
fake_google_wanted() {
  [[ -z "$(setting_value GOOGLE_CLIENT_ID)" ]]
}

# Points the oauth-worker (and the fake itself) at the fake Google; both read the environment.
use_fake_google() {
  resolve_addr "$FAKE_GOOGLE"
  export FAKE_GOOGLE_ADDR="$ADDR"
  export GOOGLE_CLIENT_ID=gcal-local-client GOOGLE_CLIENT_SECRET=gcal-local-secret
  export GOOGLE_AUTH_URL="$URL/o/oauth2/v2/auth" GOOGLE_TOKEN_URL="$URL/token"
  export GOOGLE_USERINFO_URL="$URL/oauth2/v3/userinfo" GOOGLE_REVOKE_URL="$URL/revoke"
  export GOOGLE_CALENDAR_API_URL="$URL/calendar/v3"
  local redirect
  redirect="$(setting_value OAUTH_REDIRECT_URI)"
  if [[ -z "$redirect" ]]; then
    resolve_addr oauth-worker
    redirect="$URL/api/google/callback"
  fi
  export OAUTH_REDIRECT_URI="$redirect"
}

# True when the api serves the try-it page: API_DEV_MODE as configured, else on (exported) unless
# user tokens come from an identity provider (the api can only mint HS256 tokens).
try_it_wanted() {
  local mode algorithm
  mode="$(setting_value API_DEV_MODE)"
  if [[ -z "$mode" ]]; then
    algorithm="$(setting_value JWT_ALGORITHM)"
    [[ -z "$algorithm" || "$algorithm" == HS256 ]] || return 1
    export API_DEV_MODE=true
    mode=true
  fi
  [[ "$mode" == true ]]
}

# Wires the try-it page: the OAuth callback redirects the browser back to the api's / and the page
# reads the local mailbox; either stays as configured when set.
use_try_it() {
  resolve_addr "$SINK"
  [[ -n "$(setting_value DEV_SMTP_SINK_URL)" ]] || export DEV_SMTP_SINK_URL="$URL"
  resolve_addr api
  [[ -n "$(setting_value FRONTEND_REDIRECT_URL)" ]] || export FRONTEND_REDIRECT_URL="$URL/"
}

# APP_SERVICES without process $1.
without() {
  local name kept=()
  for name in "${APP_SERVICES[@]}"; do
    [[ "$name" == "$1" ]] || kept+=("$name")
  done
  APP_SERVICES=("${kept[@]}")
}

# Where the sink takes SMTP (DEV_SMTP_SINK_SMTP_ADDR, default 127.0.0.1:1025).
sink_smtp_addr() {
  local addr
  addr="$(setting_value DEV_SMTP_SINK_SMTP_ADDR)"
  printf '%s' "${addr:-127.0.0.1:1025}"
}

# True when the mailer will send to the sink: SMTP_URL unset, or smtp://<the sink's address>.
sink_wanted() {
  local url
  url="$(setting_value SMTP_URL)"
  [[ -z "$url" || "${url%/}" == "smtp://$(sink_smtp_addr)" ]]
}

# Command-line arguments of process $1 (the sink is given its addresses, as it reads no .env).
launch_args() {
  if [[ "$1" == "$SINK" ]]; then
    resolve_addr "$SINK"
    # --journal: what it accepted survives a restart of the sink.
    printf '%s\n' --smtp "$(sink_smtp_addr)" --http "$ADDR" --journal "$DATA_DIR/dev-smtp-sink.jsonl"
  fi
}

# The value the services see for setting $1: the environment wins over .env (like the services'
# own reader, where the last line of .env counts); prints nothing when neither sets it.
setting_value() {
  local name="$1" line value
  if [[ -n "${!name+set}" ]]; then
    printf '%s' "${!name}"
    return 0
  fi
  [[ -r "$ROOT/.env" ]] || return 0
  line="$(grep -E "^[[:space:]]*(export[[:space:]]+)?${name}[[:space:]]*=" "$ROOT/.env" | tail -n 1)" || return 0
  value="${line#*=}"
  value="${value#"${value%%[![:space:]]*}"}"
  case "$value" in
    \"*) value="${value#\"}" value="${value%%\"*}" ;;
    \'*) value="${value#\'}" value="${value%%\'*}" ;;
    *) value="${value%%[[:space:]]#*}" ;;
  esac
  value="${value%"${value##*[![:space:]]}"}"
  printf '%s' "$value"
}

# Sets ADDR, HOST (where to connect: a wildcard address becomes loopback), PORT and URL (base
# URL, no trailing slash) for service $1.
resolve_addr() {
  ADDR="$(setting_value "$(addr_setting "$1")")"
  [[ -n "$ADDR" ]] || ADDR="$(addr_default "$1")"
  PORT="${ADDR##*:}"
  HOST="${ADDR%:*}"
  case "$HOST" in
    0.0.0.0 | "") HOST=127.0.0.1 ;;
    "[::]") HOST=::1 ;;
    \[*\]) HOST="${HOST#\[}" HOST="${HOST%\]}" ;;
  esac
  if [[ "$HOST" == *:* ]]; then
    URL="http://[$HOST]:$PORT"
  else
    URL="http://$HOST:$PORT"
  fi
}

# Prints the pid of process $1 if its pid file names a live process running its service's binary.
service_pid() {
  local name="$1" pid_f pid exe
  pid_f="$(pid_file "$name")"
  [[ -r "$pid_f" ]] || return 1
  pid="$(tr -dc '0-9' <"$pid_f")"
  [[ -n "$pid" ]] && process_alive "$pid" || return 1
  if [[ -e "/proc/$pid/exe" ]]; then
    # " (deleted)" when the binary was rebuilt while it ran.
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    exe="${exe% (deleted)}"
    [[ -z "$exe" || "${exe##*/}" == "$(service_of "$name")" ]] || return 1
  fi
  printf '%s' "$pid"
}

# Prints the pid of another run-local.sh that is starting or running the services.
runner_pid() {
  local pid
  [[ -r "$RUNNER_PID_FILE" ]] || return 1
  pid="$(tr -dc '0-9' <"$RUNNER_PID_FILE")"
  [[ -n "$pid" && "$pid" != "$$" ]] && process_alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'run-local\.sh' || return 1
  fi
  printf '%s' "$pid"
}

# True if something accepts TCP connections on $1:$2.
port_in_use() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Best effort: who listens on port $1 ("python3 pid 1234"), or nothing.
port_owner() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null \
    | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n 1
}

# GET $URL$1; sets HTTP_CODE ("000" when nothing answered) and HTTP_BODY. Uses curl, or bash's
# /dev/tcp when curl is missing.
http_get() {
  local path="$1" out line
  HTTP_CODE=000 HTTP_BODY=""
  if command -v curl >/dev/null 2>&1; then
    out="$(curl -s --connect-timeout 2 --max-time 3 -w '\n%{http_code}' "$URL$path" 2>/dev/null)" || true
    HTTP_CODE="${out##*$'\n'}"
    HTTP_BODY="${out%$'\n'*}"
  else
    # shellcheck disable=SC2016 # expanded by the inner bash
    out="$(timeout 3 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
      cat <&3' "$HOST" "$PORT" "$path" 2>/dev/null)" || true
    line="${out%%$'\n'*}"
    if [[ "$line" == HTTP/* ]]; then
      line="${line#* }"
      HTTP_CODE="${line%% *}"
      HTTP_BODY="${out#*$'\r\n\r\n'}"
    fi
  fi
  [[ "$HTTP_CODE" =~ ^[0-9]{3}$ ]] || HTTP_CODE=000
}

# Prints what service $1 logged since its last start (at most 40 lines) to stderr.
show_log_tail() {
  local log_f
  log_f="$(log_file "$1")"
  [[ -s "$log_f" ]] || return 0
  printf -- '--- %s (last 40 lines of this start) ---\n' "$log_f" >&2
  awk '/^==== .* run-local\.sh: /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$log_f" \
    | tail -n 40 >&2 || true
  printf -- '---\n' >&2
}

# What a service's exit status means.
explain_exit() {
  case "$1" in
    78) printf 'invalid configuration; the log names each bad setting' ;;
    1) printf 'could not start: a dependency stayed unreachable for STARTUP_TIMEOUT, or the address was taken' ;;
    0) printf 'it stopped by itself' ;;
    *) if (($1 > 128)); then printf 'killed by signal %s' "$(kill -l "$(($1 - 128))" 2>/dev/null || echo $(($1 - 128)))"; else printf 'see its log'; fi ;;
  esac
}

# --- stopping ------------------------------------------------------------------------------------

# Stops the services (and the SMTP sink): SIGTERM to all at once, then up to SERVICE_STOP_TIMEOUT seconds for
# each to exit, then SIGKILL.
stop_services() {
  local name pid i names=() pids=() status=0
  for name in "${APP_SERVICES[@]}"; do
    if pid="$(service_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$name")
      pids+=("$pid")
    else
      rm -f "$(pid_file "$name")"
    fi
  done
  ((${#pids[@]} > 0)) || return 0
  log "stopping ${names[*]} (SIGTERM; up to ${SERVICE_STOP_TIMEOUT}s before SIGKILL) ..."
  local deadline=$((SECONDS + SERVICE_STOP_TIMEOUT))
  for i in "${!names[@]}"; do
    name="${names[$i]}"
    pid="${pids[$i]}"
    local outcome=0
    await_exit_or_kill "$pid" "$deadline" || outcome=$?
    case "$outcome" in
      0) log "$name: stopped (pid $pid)" ;;
      1) log "$name: killed (did not exit within ${SERVICE_STOP_TIMEOUT}s of SIGTERM)" ;;
      *)
        err "$name: pid $pid survived SIGKILL"
        status=1
        continue
        ;;
    esac
    # Reap it if it is our child; harmless otherwise.
    wait "$pid" 2>/dev/null || true
    rm -f "$(pid_file "$name")"
  done
  return "$status"
}

# Runs scripts/infra/stop.sh, immune to a second Ctrl-C (it would otherwise leave servers behind).
stop_infra() {
  (
    trap '' INT
    exec "$ROOT/scripts/infra/stop.sh"
  )
}

# The exit trap: stops what this run started, unless it detached successfully.
on_exit() {
  local rc=$?
  trap - EXIT
  if ((CLEANUP_ON_EXIT)); then
    # A second Ctrl-C must not cut the shutdown short.
    trap 'log "already stopping; please wait (up to ${SERVICE_STOP_TIMEOUT}s for the services)"' INT TERM HUP
    stop_services || rc=1
    if ((KEEP_INFRA)); then
      log "infrastructure left running (--keep-infra); stop it with scripts/infra/stop.sh"
    elif ((INFRA_WAS_RUNNING)); then
      log "infrastructure was already running before this run; left running (scripts/infra/stop.sh stops it)"
    elif ((INFRA_STARTED)); then
      log "stopping the infrastructure ..."
      stop_infra || rc=1
    fi
  fi
  if [[ "$(runner_pid_self)" == "$$" ]]; then
    rm -f "$RUNNER_PID_FILE"
  fi
  exit "$rc"
}

# The pid recorded in the runner pid file (maybe ours), or nothing.
runner_pid_self() {
  if [[ -r "$RUNNER_PID_FILE" ]]; then
    tr -dc '0-9' <"$RUNNER_PID_FILE"
  fi
}

on_signal() {
  log "$1 received; shutting down"
  case "$1" in
    SIGINT) exit 130 ;;
    SIGHUP) exit 129 ;;
    *) exit 143 ;;
  esac
}

# --stop: ends a running run-local.sh (which cleans up after itself), then stops whatever is left.
stop_all() {
  local pid waited=0 limit=$((SERVICE_STOP_TIMEOUT + 20)) status=0
  if pid="$(runner_pid)"; then
    log "asking the running run-local.sh (pid $pid) to stop ..."
    kill -TERM "$pid" 2>/dev/null || true
    while process_alive "$pid" && ((waited < limit * 5)); do
      sleep 0.2
      waited=$((waited + 1))
    done
    process_alive "$pid" && err "run-local.sh pid $pid still running after ${limit}s; stopping its services directly"
  fi
  # Either shape's processes, whichever run.
  APP_SERVICES=("${KNOWN_PROCESSES[@]}")
  stop_services || status=1
  if ((KEEP_INFRA)); then
    log "infrastructure left running (--keep-infra)"
  else
    stop_infra || status=1
  fi
  local name left=()
  for name in "${KNOWN_PROCESSES[@]}"; do
    service_pid "$name" >/dev/null && left+=("$name")
  done
  if ((${#left[@]} > 0)); then
    err "still running: ${left[*]}"
    status=1
  fi
  ((status == 0)) && log "stopped"
  return "$status"
}

# --- starting ------------------------------------------------------------------------------------

# Fails before anything is started if the services are already running or a port is taken.
preflight() {
  local name pid owner problems=0
  if pid="$(runner_pid)"; then
    die "run-local.sh is already running (pid $pid); stop it with Ctrl-C there or: scripts/run-local.sh --stop"
  fi
  # Either shape's: a --detach run of the other shape holds the same ports.
  for name in "${KNOWN_PROCESSES[@]}"; do
    if pid="$(service_pid "$name")"; then
      die "$name is already running (pid $pid, from an earlier --detach run); stop it first: scripts/run-local.sh --stop"
    fi
  done
  # NATS of the other shape (left by --keep-infra) takes the ports this one needs.
  local node
  for node in "${NATS_OTHER_NODES[@]}"; do
    if pid="$(running_pid "$node")"; then
      die "NATS runs as $( ((CLUSTER)) && printf 'one node' || printf 'a three-node cluster') ($node, pid $pid)," \
        "but this run wants $( ((CLUSTER)) && printf 'the cluster' || printf 'one node'); stop it first:" \
        "scripts/run-local.sh --stop (or scripts/infra/stop.sh); both keep their data"
    fi
  done
  # Replicas that share an address are checked once.
  local -A checked=()
  for name in "${APP_SERVICES[@]}"; do
    resolve_addr "$name"
    if [[ ! "$PORT" =~ ^[0-9]+$ ]]; then
      continue # not an address; the service itself reports the bad setting (exit 78)
    fi
    [[ -z "${checked[$ADDR]:-}" ]] || continue
    checked[$ADDR]=1
    if port_in_use "$HOST" "$PORT"; then
      owner="$(port_owner "$PORT")"
      err "$name: port $PORT ($HOST:$PORT) is already in use${owner:+ by $owner}." \
        "Stop that process, or give $name another address with $(addr_setting "$name")=127.0.0.1:<port> (environment or .env)."
      problems=$((problems + 1))
    fi
  done
  if [[ " ${APP_SERVICES[*]} " == *" $SINK "* ]]; then
    local smtp
    smtp="$(sink_smtp_addr)"
    if port_in_use "${smtp%:*}" "${smtp##*:}"; then
      owner="$(port_owner "${smtp##*:}")"
      err "$SINK: SMTP port ${smtp##*:} ($smtp) is already in use${owner:+ by $owner}." \
        "If that is an SMTP server you want the mailer to use, set SMTP_URL=smtp://$smtp (the sink then is not started); otherwise stop it, or move the sink with DEV_SMTP_SINK_SMTP_ADDR and SMTP_URL."
      problems=$((problems + 1))
    fi
  fi
  ((problems == 0)) || exit 1
}

find_cargo() {
  if command -v cargo >/dev/null 2>&1; then
    command -v cargo
  elif [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    printf '%s' "$HOME/.cargo/bin/cargo"
  else
    die "cargo not found; install Rust (https://rustup.rs) and run this again"
  fi
}

build() {
  local cargo args=(build --bins)
  cargo="$(find_cargo)"
  [[ "$PROFILE" == release ]] && args+=(--release)
  log "building: cargo ${args[*]}"
  "$cargo" "${args[@]}" || die "cargo ${args[*]} failed"
}

# Starts process $1 in the background, in its own session (so a terminal's Ctrl-C reaches only
# this script, which then stops the services in order).
launch() {
  local name="$1" service bin log_f pid args=()
  service="$(service_of "$name")"
  bin="$TARGET_DIR/$PROFILE/$service"
  log_f="$(log_file "$name")"
  [[ -x "$bin" ]] || die "$bin not found after the build"
  mapfile -t args < <(launch_args "$name")
  printf '\n==== %s run-local.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$bin" >>"$log_f"
  # Where this start's output begins (readiness reads only what follows).
  LOG_START["$name"]="$(wc -c <"$log_f" | tr -d ' ')"
  # Each service connects to NATS as its own identity (unless NATS_CREDS_FILE is configured);
  # replicas share their service's.
  local creds="$NATS_AUTH_DIR/creds/$service.creds" env_args=()
  if [[ -f "$creds" && -z "$(setting_value NATS_CREDS_FILE)" ]]; then
    env_args=("NATS_CREDS_FILE=$creds")
  fi
  local setting
  while IFS= read -r setting; do
    env_args+=("$setting")
  done < <(replica_env "$name")
  # In a non-interactive shell setsid execs in place (as env does), so $! is the service's pid.
  env "${env_args[@]+"${env_args[@]}"}" setsid "$bin" "${args[@]+"${args[@]}"}" >>"$log_f" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$(pid_file "$name")"
  log "$name: started (pid $pid), log $log_f"
}

declare -A LOG_START=()

# True if process $1 logged text $2 since its start by this run.
logged_since_start() {
  local log_f text
  log_f="$(log_file "$1")"
  [[ -r "$log_f" ]] || return 1
  text="$(tail -c "+$((${LOG_START[$1]:-0} + 1))" "$log_f")"
  [[ "$text" == *"$2"* ]]
}

# Whether process $1 is ready: its /readyz answers 200 and, for a replica on a shared address
# (which any replica answers), it has logged "listening" since its start. Sets ADDR, URL, ...
# (resolve_addr) and HTTP_CODE, HTTP_BODY (http_get). Returns 0 ready, 1 not (no 200), 2 the
# address is ready but this replica has not joined it yet.
process_ready() {
  resolve_addr "$1"
  http_get /readyz
  [[ "$HTTP_CODE" == 200 ]] || return 1
  if shares_addr "$1" && ! logged_since_start "$1" listening; then
    return 2
  fi
  return 0
}

# Waits until every service's /readyz returns 200; on a service that exits or is not ready in
# time, prints why and its log, and fails.
wait_ready() {
  local name pid rc pending=("${APP_SERVICES[@]}") next
  local deadline=$((SECONDS + READY_TIMEOUT))
  log "waiting for /readyz of every service (up to ${READY_TIMEOUT}s) ..."
  while ((${#pending[@]} > 0)); do
    next=()
    for name in "${pending[@]}"; do
      pid="$(tr -dc '0-9' <"$(pid_file "$name")")"
      if ! process_alive "$pid"; then
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        rm -f "$(pid_file "$name")"
        show_log_tail "$name"
        err "$name exited during startup with status $rc ($(explain_exit "$rc")); full log: $(log_file "$name")"
        return 1
      fi
      local ready=0
      process_ready "$name" || ready=$?
      if ((ready == 0)); then
        if shares_addr "$name"; then
          log "$name: ready (listening on the shared $ADDR; $URL/readyz)"
        else
          log "$name: ready ($URL/readyz)"
        fi
      else
        next+=("$name")
        if ((ready == 2)); then
          LAST_READYZ["$name"]="200 from another replica on $URL, but $name has not logged \"listening\" since its start"
        elif [[ "$HTTP_CODE" == 000 ]]; then
          LAST_READYZ["$name"]="no HTTP answer on $URL"
        else
          LAST_READYZ["$name"]="$HTTP_CODE $HTTP_BODY"
        fi
      fi
    done
    pending=("${next[@]+"${next[@]}"}")
    ((${#pending[@]} > 0)) || break
    if ((SECONDS >= deadline)); then
      for name in "${pending[@]}"; do
        show_log_tail "$name"
        err "$name: not ready after ${READY_TIMEOUT}s; last /readyz: ${LAST_READYZ[$name]}; full log: $(log_file "$name")"
      done
      return 1
    fi
    sleep 0.5
  done
}
declare -A LAST_READYZ=()

# Width of the SERVICE column (metadata-worker-2 needs more).
ROW_WIDTH=16
row() { printf "  %-${ROW_WIDTH}s %-8s %-24s %-9s %s\n" "$@"; }

summary() {
  local name pid ready rc
  printf '\n'
  row SERVICE PID URL READY LOG
  for name in "${APP_SERVICES[@]}"; do
    pid="$(service_pid "$name" || printf '-')"
    rc=0
    process_ready "$name" || rc=$?
    case "$rc" in
      0) ready=yes ;;
      2) ready="no (not listening)" ;;
      *) ready="no ($HTTP_CODE)" ;;
    esac
    row "$name" "$pid" "$URL" "$ready" "${LOG_DIR#"$ROOT"/}/$name.log"
  done
  printf '\n'
  printf '  Endpoints on each service URL: /healthz /readyz /metrics\n'
  if [[ "$(setting_value API_DEV_MODE)" == true ]]; then
    resolve_addr api
    printf '  Try it: open %s/ in a browser: pick a subaccount and an email, Connect, consent, and watch the metadata, the email and the events\n' "$URL"
  fi
  if [[ " ${APP_SERVICES[*]} " == *" $SINK "* ]]; then
    resolve_addr "$SINK"
    printf '  Mailbox: %s/ (JSON: %s/messages) shows every email sent (SMTP %s; also printed to %s)\n' \
      "$URL" "$URL" "$(sink_smtp_addr)" "${LOG_DIR#"$ROOT"/}/$SINK.log"
  else
    printf '  Mail goes to SMTP_URL (set in the environment or .env); no local SMTP sink was started\n'
  fi
  if [[ " ${APP_SERVICES[*]} " == *" $FAKE_GOOGLE "* ]]; then
    resolve_addr "$FAKE_GOOGLE"
    printf '  Google: the local fake Google at %s (consent page with Allow/Deny; any account email)\n' "$URL"
  fi
  if ((CLUSTER)); then
    local node monitors=() logs=()
    for node in "${NATS_NODES[@]}"; do
      monitors+=("http://$BIND_HOST:$(nats_monitor_port "$node")")
      logs+=("$node.log")
    done
    printf '  Infrastructure: NATS cluster %s of %s: %s (monitoring %s), Redis %s, MongoDB %s\n' \
      "$NATS_CLUSTER_NAME" "${NATS_NODES[*]}" "$(setting_value NATS_URL)" "${monitors[*]}" \
      "${REDIS_URL:-redis://$BIND_HOST:$REDIS_PORT}" "${MONGODB_URI:-mongodb://$BIND_HOST:$MONGO_PORT}"
    printf '  Logs: %s/<service>-<replica>.log (infrastructure: %s, redis.log, mongo.log)\n' \
      "${LOG_DIR#"$ROOT"/}" "${logs[*]}"
    resolve_addr api-1
    local api_url="$URL"
    resolve_addr oauth-worker-1
    printf '  Replicas: api-1/api-2 share %s and oauth-worker-1/-2 share %s (SO_REUSEPORT). Kill one:\n' \
      "$api_url" "$URL"
    # shellcheck disable=SC2016 # a command for the reader to run
    printf '    kill -9 "$(cat %s)"; curl %s/readyz   # still 200, from api-2\n' \
      "${RUN_DIR#"$ROOT"/}/api-1.pid" "$api_url"
  else
    printf '  Infrastructure: NATS %s (monitoring http://%s:%s), Redis %s, MongoDB %s\n' \
      "${NATS_URL:-nats://$BIND_HOST:$NATS_PORT}" "$BIND_HOST" "$NATS_MONITOR_PORT" \
      "${REDIS_URL:-redis://$BIND_HOST:$REDIS_PORT}" "${MONGODB_URI:-mongodb://$BIND_HOST:$MONGO_PORT}"
    printf '  Logs: %s/<service>.log (infrastructure: nats.log, redis.log, mongo.log)\n' "${LOG_DIR#"$ROOT"/}"
  fi
  if [[ "$MODE" == detach ]]; then
    printf '  Running in the background. Stop with: scripts/run-local.sh --stop%s\n' \
      "$( ((KEEP_INFRA)) && printf ' (add --keep-infra to leave NATS, Redis and MongoDB running)')"
  else
    printf '  Press Ctrl-C to stop the services%s.\n' \
      "$( ((KEEP_INFRA)) || ((INFRA_WAS_RUNNING)) || printf ' and the infrastructure')"
  fi
  printf '\n'
}

# True if a process of service $1 other than $2 runs.
other_replica_runs() {
  local name
  for name in "${APP_SERVICES[@]}"; do
    [[ "$name" != "$2" && "$(service_of "$name")" == "$1" ]] || continue
    service_pid "$name" >/dev/null && return 0
  done
  return 1
}

# Foreground: returns only if a service exits by itself (Ctrl-C/SIGTERM go through on_signal).
# In the cluster shape a replica may exit while another replica of its service runs: that is
# reported and the run goes on.
watch_services() {
  local name pid rc timer="" watched=("${APP_SERVICES[@]}") alive pids
  while true; do
    alive=()
    pids=()
    for name in "${watched[@]}"; do
      pid="$(tr -dc '0-9' <"$(pid_file "$name")" 2>/dev/null)" || pid=""
      if service_pid "$name" >/dev/null; then
        alive+=("$name")
        pids+=("$pid")
        continue
      fi
      # Its own exit status (bash keeps it after reaping).
      rc=0
      [[ -z "$pid" ]] || wait "$pid" 2>/dev/null || rc=$?
      rm -f "$(pid_file "$name")"
      if [[ "$(service_of "$name")" != "$name" ]] && other_replica_runs "$(service_of "$name")" "$name"; then
        log "$name exited (status $rc: $(explain_exit "$rc")); its service goes on with its other replica; log: $(log_file "$name")"
        continue
      fi
      show_log_tail "$name"
      err "$name exited unexpectedly (status $rc: $(explain_exit "$rc")); stopping everything"
      return 1
    done
    watched=("${alive[@]}")
    # Returns when one of them exits, or after 5 s at the latest: a process that exits (and is
    # reaped) between the check above and this wait is not a job wait -n can see any more.
    # (The timer runs out by itself: a killed one would be reported as "Terminated".)
    if [[ -z "$timer" ]] || ! process_alive "$timer"; then
      [[ -z "$timer" ]] || wait "$timer" 2>/dev/null || true
      sleep 5 >/dev/null 2>&1 &
      timer=$!
    fi
    wait -n "${pids[@]}" "$timer" 2>/dev/null || true
  done
}

start_all() {
  if ! sink_wanted; then
    without "$SINK"
    log "SMTP_URL points at another SMTP server: mail goes there, the local SMTP sink is not started"
  fi
  if fake_google_wanted; then
    use_fake_google
    resolve_addr "$FAKE_GOOGLE"
    log "no GOOGLE_CLIENT_ID configured: using the local fake Google at $URL"
  else
    without "$FAKE_GOOGLE"
    log "GOOGLE_CLIENT_ID is set: the oauth-worker talks to the configured provider"
  fi
  if try_it_wanted; then
    use_try_it
    log "API_DEV_MODE=true: the api serves the try-it page; after consent the browser returns to ${FRONTEND_REDIRECT_URL:-$(setting_value FRONTEND_REDIRECT_URL)}"
  else
    log "API_DEV_MODE is off (or user tokens come from an identity provider): no try-it page"
  fi
  # Webhook receivers of a local try-out run on this machine, usually over plain http: allow
  # both unless configured (production keeps both false, the default).
  [[ -n "$(setting_value WEBHOOK_ALLOW_HTTP)" ]] || export WEBHOOK_ALLOW_HTTP=true
  [[ -n "$(setting_value WEBHOOK_ALLOW_PRIVATE_TARGETS)" ]] || export WEBHOOK_ALLOW_PRIVATE_TARGETS=true
  configure_nats_url
  if ((CLUSTER)); then
    log "cluster shape: three NATS nodes (${NATS_URL:-$(setting_value NATS_URL)}), two replicas of each service"
  fi
  preflight
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  printf '%s\n' "$$" >"$RUNNER_PID_FILE"
  CLEANUP_ON_EXIT=1

  log "installing the infrastructure tools (fast when already installed) ..."
  "$ROOT/scripts/infra/install.sh"

  if "$ROOT/scripts/infra/status.sh" >/dev/null 2>&1; then
    INFRA_WAS_RUNNING=1
  fi
  # Built first: start.sh writes the NATS credentials with gcal-ops on the first run.
  build
  if ((CLUSTER)); then
    log "starting a three-node NATS cluster, Redis and MongoDB ..."
  else
    log "starting NATS, Redis and MongoDB ..."
  fi
  INFRA_STARTED=1
  GCAL_OPS="$TARGET_DIR/$PROFILE/gcal-ops" "$ROOT/scripts/infra/start.sh"

  local name
  for name in "${APP_SERVICES[@]}"; do
    launch "$name"
  done
  wait_ready || exit 1
  summary

  if [[ "$MODE" == detach ]]; then
    CLEANUP_ON_EXIT=0
    rm -f "$RUNNER_PID_FILE"
    exit 0
  fi
  watch_services || exit 1
}

main() {
  while (($# > 0)); do
    case "$1" in
      --release) PROFILE=release ;;
      --keep-infra) KEEP_INFRA=1 ;;
      --detach) [[ "$MODE" == stop ]] && die "--detach and --stop exclude each other"; MODE=detach ;;
      --stop) [[ "$MODE" == detach ]] && die "--detach and --stop exclude each other"; MODE=stop ;;
      --cluster)
        CLUSTER=1
        NATS_SHAPE_GIVEN=1
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        err "unknown option: $1 (see scripts/run-local.sh --help)"
        exit 2
        ;;
    esac
    shift
  done
  # The shape: the processes to start, and what scripts/infra/*.sh are told (--stop without a
  # shape leaves them to stop whatever runs).
  select_nats_shape "$CLUSTER"
  if [[ "$MODE" != stop ]] || ((NATS_SHAPE_GIVEN)); then
    export NATS_CLUSTER
  fi
  if ((CLUSTER)); then
    ALL_PROCESSES=("${CLUSTER_PROCESSES[@]}")
    ROW_WIDTH=18
  else
    ALL_PROCESSES=("${SINGLE_PROCESSES[@]}")
  fi
  APP_SERVICES=("${ALL_PROCESSES[@]}")

  trap on_exit EXIT
  trap 'on_signal SIGINT' INT
  trap 'on_signal SIGTERM' TERM
  trap 'on_signal SIGHUP' HUP

  if [[ "$MODE" == stop ]]; then
    stop_all
  else
    start_all
  fi
}

# Run unless sourced (sourcing gives the functions to a test).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
