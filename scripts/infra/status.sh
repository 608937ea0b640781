#!/usr/bin/env bash
# Shows whether each local server started by start.sh is running and accepting connections.
# Exit status: 0 when all are up, 3 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/infra/lib.sh
source "$ROOT/scripts/infra/lib.sh"

main() {
  local name pid port status=0
  for name in "${SERVICES[@]}"; do
    port="$(service_port "$name")"
    if pid="$(running_pid "$name")"; then
      if port_open "$port"; then
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
  return "$status"
}

main "$@"
