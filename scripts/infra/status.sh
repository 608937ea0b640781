#!/usr/bin/env bash
# Shows whether each local server started by start.sh is running and accepting connections.
# Exit status: 0 when all are up, 3 otherwise.
# NATS: the nodes of the shape chosen with NATS_CLUSTER or --cluster (see start.sh), else of the
# shape that runs; a cluster node also shows how many of the other nodes it is routed to (all
# of them for "up"). Nodes of the other shape that run are listed too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/infra/lib.sh
source "$ROOT/scripts/infra/lib.sh"

main() {
  case "${1:-}" in
    "") autodetect_nats_shape ;;
    --cluster) select_nats_shape 1 ;;
    *)
      printf 'status.sh: error: unknown option: %s\n' "$1" >&2
      exit 2
      ;;
  esac
  local name pid port peers status=0
  for name in "${SERVICES[@]}"; do
    port="$(service_port "$name")"
    if pid="$(running_pid "$name")"; then
      if port_open "$port" && [[ "$name" == nats-* ]]; then
        peers="$(nats_route_peers "$name")"
        say "$name: running (pid $pid), accepting on $BIND_HOST:$port, routed to $peers of" \
          "$((${#NATS_NODES[@]} - 1)) other nodes (monitoring http://$BIND_HOST:$(nats_monitor_port "$name"))"
        ((peers >= ${#NATS_NODES[@]} - 1)) || status=3
      elif port_open "$port"; then
        say "$name: running (pid $pid), accepting on $BIND_HOST:$port"
      else
        say "$name: running (pid $pid) but NOT accepting on $BIND_HOST:$port (see $(log_file "$name"))"
        status=3
      fi
    else
      if port_open "$port"; then
        say "$name: not started by start.sh, but something else listens on $BIND_HOST:$port"
      else
        say "$name: stopped"
      fi
      status=3
    fi
  done
  for name in "${NATS_OTHER_NODES[@]}"; do
    if pid="$(running_pid "$name")"; then
      say "$name: running (pid $pid) on $BIND_HOST:$(service_port "$name"), a node of the other" \
        "NATS shape (stop it with scripts/infra/stop.sh before starting this one)"
    fi
  done
  return "$status"
}

main "$@"
