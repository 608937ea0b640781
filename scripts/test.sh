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
if [[ $# -gt 0 ]]; then
  exec cargo test "$@"
fi
exec cargo test --workspace --all-targets --locked
