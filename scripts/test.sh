#!/usr/bin/env bash
# The README's test command: installs the real servers the suite needs (cached outside the
# repository, so only the first run on a machine pays for it), then runs every test in the
# workspace. Tests start their own servers on free loopback ports; nothing needs to be running.
#
#   scripts/test.sh                  # every test
#   scripts/test.sh -p e2e           # extra arguments go to `cargo test`
#   TEST_LOG=1 scripts/test.sh ...   # show the services' logs in failing tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/infra/install.sh"
# shellcheck source=scripts/infra/env.sh
source "$ROOT/scripts/infra/env.sh"

# Two cores: keep test binaries from starving each other's servers.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"

# Default targets: libraries, binaries, integration and doc tests (benchmarks only run with
# `cargo bench`). Extra arguments replace the workspace-wide selection.
if [[ $# -eq 0 ]]; then
  # --no-fail-fast: one run reports every failing test binary, not just the first.
  set -- --workspace --locked --no-fail-fast
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo prints one "test result:" line per test binary, the last often a crate's empty doc
# tests; one total line says what the whole run did.
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
