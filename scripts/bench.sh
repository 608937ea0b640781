#!/usr/bin/env bash
# Every benchmark of issue 17, one after the other, each measuring its floor in the same run
# (release builds; the real servers as the test suite starts them). Prints each bench's
# output and, at the end, the lines that carry the verdicts.
#
#   scripts/bench.sh                 # the full runs (about 15 minutes after the builds)
#   BENCH_SHORT=1 scripts/bench.sh   # CI: short phases; exits non-zero if a bench fails its
#                                    # threshold (goal minus the measured noise)
#   scripts/bench.sh memory connect  # only these
#
# Run it on a machine with nothing else running: every figure is a share of a floor measured
# beside it, but two cores shared with a build make both move.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/infra/install.sh"
# shellcheck source=scripts/infra/env.sh
source "$ROOT/scripts/infra/env.sh"

benches=("$@")
if [[ ${#benches[@]} -eq 0 ]]; then
  benches=(memory metadata_drain access_token connect)
  [[ -f tests/benches/scale.rs ]] && benches+=(scale)
fi

# Builds first, so a bench's time is not a build's.
cargo bench -p e2e --locked --no-run $(printf -- '--bench %s ' "${benches[@]}")

logs="$(mktemp -d)"
failed=()
for bench in "${benches[@]}"; do
  echo "== cargo bench -p e2e --bench $bench${BENCH_SHORT:+ (BENCH_SHORT=$BENCH_SHORT)}"
  if ! cargo bench -p e2e --locked --bench "$bench" 2>&1 | tee "$logs/$bench.log"; then
    failed+=("$bench")
  fi
done

echo
echo "== verdicts"
grep -hE "goal|FAIL" "$logs"/*.log || true
rm -rf "$logs"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
