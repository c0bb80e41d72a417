#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets in fuzz/ and prints, per target, how many inputs
# it ran and whether anything crashed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    each target for SECONDS (default 60); all targets
#                                            (fuzz/fuzz_targets/*.rs) when none is named
#   FUZZ_RUNS=2000 scripts/fuzz.sh 0 ...     a fixed number of inputs instead (a smoke run)
#
# cargo-fuzz needs nightly compiler flags; the stable toolchain is allowed them with
# RUSTC_BOOTSTRAP=1 (set here). cargo-fuzz is installed from crates.io when missing.
# Environment: FUZZ_SANITIZER (address, the default, or none: up to 7 times as fast, no memory
# checks in the unsafe code of dependencies), FUZZ_TARGET_DIR (default
# $CARGO_TARGET_DIR/fuzz, else fuzz/target); CARGO_BUILD_JOBS limits the build's jobs.
#
# Each target reads its seeds from fuzz/corpus/<target>/ (committed, never written) and keeps
# what it learns in fuzz/work/<target>/ (not committed), so later runs start where earlier ones
# stopped. A crashing input is written to fuzz/artifacts/<target>/; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>` (in fuzz/), and
# add it to the seeds with a unit test once fixed. Exit status 1 if any target crashed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

seconds="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked || exit 1
fi
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}}"
target_dir="${target_dir:-$ROOT/fuzz/target}"
build=(--sanitizer "$sanitizer" --target-dir "$target_dir")

if [ -n "${FUZZ_RUNS:-}" ]; then
  limit=(-runs="$FUZZ_RUNS")
else
  limit=(-max_total_time="$seconds")
fi

start=$(date +%s)
cargo fuzz build "${build[@]}" || exit 1
echo "fuzz: built in $(($(date +%s) - start)) s (sanitizer: $sanitizer)"

status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  log="work/$t.log"
  t0=$(date +%s)
  # -timeout: an input taking 10 s counts as a crash (a hang); -rss_limit_mb: so does 2 GB.
  cargo fuzz run "${build[@]}" "$t" "work/$t" "corpus/$t" -- \
    "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)
  if [ -z "$execs" ]; then
    execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n1)
  fi
  if [ "$rc" -eq 0 ]; then
    result="ok"
  else
    status=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
    result="CRASH (exit $rc) ${artifact:-see fuzz/$log}"
    grep -m1 -E "panicked|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" >&2 || true
  fi
  line=$(printf '%-16s %12s execs %6s s  %s' "$t" "${execs:-?}" "$secs" "$result")
  echo "fuzz: $line"
  summary+=("$line")
done

echo
echo "target               executions   time  result"
printf '%s\n' "${summary[@]}"
exit "$status"
