#!/usr/bin/env bash
# Runs libFuzzer targets of fuzz/ for a bounded time each (make fuzz).
# Usage: scripts/fuzz.sh <build dir> <seconds per target> <target>...
#
# A target reads its checked-in corpus (fuzz/corpus/<target>/) but writes the
# inputs it finds to <build dir>/corpus/<target>/, which later runs reuse, so
# the checked-in corpus never grows. Any crash, leak, timeout (one input
# running over 10 s) or memory use over 2 GB fails the run; the input that
# caused it is saved as <build dir>/crashes/<target>-<kind>-<sha1>.
set -euo pipefail
cd "$(dirname "$0")/.."

build=$1
seconds=$2
shift 2

for target in "$@"; do
  corpus=$build/corpus/$target
  log=$build/fuzz-$target.log
  mkdir -p "$corpus" "$build/crashes"
  echo "=== fuzzing $target for $seconds s (log: $log)"
  if ! "$build/bin/${target}_fuzzer" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -max_len=8192 -dict="fuzz/$target.dict" \
      -artifact_prefix="$build/crashes/$target-" -print_final_stats=1 \
      "$corpus" "fuzz/corpus/$target" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "FAILED: $target. Reproduce: $build/bin/${target}_fuzzer <the input" \
      "saved under $build/crashes/, named above>" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1
done
