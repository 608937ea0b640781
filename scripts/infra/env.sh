# shellcheck shell=bash
# Source this file (do not execute it): it points TOOLS_DIR at the shared tool cache that
# scripts/infra/install.sh fills, and puts "$TOOLS_DIR/bin" first on PATH.
#
#   source scripts/infra/env.sh
#
# The cache lives outside the repository so every clone and CI run on the same machine reuses
# the ~7-minute secantusd-rs build. Override the location with GCAL_TOOLS_DIR.
# No `set -e` here: this file runs inside the caller's shell and must not change its options.

TOOLS_DIR="${GCAL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gcal-connector/tools}"
export TOOLS_DIR
# Child processes (test harnesses, other scripts) see the same cache.
export GCAL_TOOLS_DIR="$TOOLS_DIR"

case ":${PATH}:" in
  *":${TOOLS_DIR}/bin:"*) ;;
  *) export PATH="${TOOLS_DIR}/bin${PATH:+:${PATH}}" ;;
esac
