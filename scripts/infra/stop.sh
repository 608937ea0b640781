#!/usr/bin/env bash
# Stops the servers started by start.sh: SIGTERM, up to STOP_TIMEOUT seconds (10) for them to
# exit, then SIGKILL. Removes their pid files. Data and logs under .local/ are kept.
# NATS in either shape (one node "nats", or the cluster's nats-1..3; see start.sh): whichever
# nodes run are stopped. NATS_CLUSTER or --cluster only picks which nodes are reported as "not
# running"; without either, the shape that runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/infra/lib.sh
source "$ROOT/scripts/infra/lib.sh"

STOP_TIMEOUT="${STOP_TIMEOUT:-10}"

main() {
  case "${1:-}" in
    "") autodetect_nats_shape ;;
    --cluster) select_nats_shape 1 ;;
    *)
      printf 'stop.sh: error: unknown option: %s\n' "$1" >&2
      exit 2
      ;;
  esac
  local name pid names=() pids=()
  # The chosen shape's servers, then any node of the other shape that is left.
  for name in "${SERVICES[@]}" "${NATS_OTHER_NODES[@]}"; do
    if pid="$(running_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$name")
      pids+=("$pid")
    elif [[ -e "$(pid_file "$name")" ]]; then
      rm -f "$(pid_file "$name")"
      say "$name: not running (removed stale pid file)"
    elif [[ " ${SERVICES[*]} " == *" $name "* ]]; then
      say "$name: not running"
    fi
  done

  # All were signalled at once; now wait for each within one shared deadline.
  local i deadline=$((SECONDS + STOP_TIMEOUT)) status=0
  for i in "${!names[@]}"; do
    name="${names[$i]}"
    pid="${pids[$i]}"
    local outcome=0
    await_exit_or_kill "$pid" "$deadline" || outcome=$?
    case "$outcome" in
      0) say "$name: stopped (pid $pid)" ;;
      1) say "$name: killed (pid $pid did not exit within ${STOP_TIMEOUT}s of SIGTERM)" ;;
      *)
        say "$name: ERROR pid $pid survived SIGKILL" >&2
        status=1
        continue
        ;;
    esac
    rm -f "$(pid_file "$name")"
  done
  return "$status"
}

main "$@"
