#!/usr/bin/env bash
# The whole test suite: installs what the tests need (nginx, caddy, the reference IdP's npm
# packages), checks the code's shape (layering and import cycles, clippy with warnings as
# errors, rustdoc without warnings), then builds and runs every unit and integration test
# (`AK_OUTPOST_FUZZ_SMOKE=1`: then also a short run of every fuzz target, see fuzz/README.md).
#
# Two phases: first the packaging tests, whose static fat-LTO release build keeps both cores
# busy for minutes; then everything else, on a machine no longer busy compiling (tests that
# start the IdP, nginx or Caddy wait for them with timeouts, and a 2-core machine linking with
# LTO can starve them past those). Both phases always run; the exit code is non-zero if either
# failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-deps.sh
status=0
python3 scripts/check-layers.py || status=$?
cargo clippy --locked --all-targets -- -D warnings || status=$?
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet || status=$?
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --test-threads 2 -E 'binary(packaging)' || status=$?
  cargo nextest run --locked --no-fail-fast --test-threads 2 -E 'not binary(packaging)' || status=$?
else
  cargo test --locked --no-fail-fast --test packaging -- --test-threads 2 || status=$?
  cargo test --locked --no-fail-fast -- --test-threads 2 || status=$?
fi
# The fuzz targets' code runs above on stable (tests/fuzz_corpus.rs: corpora + random inputs).
# The real libFuzzer targets only on request: their first build (every dependency instrumented,
# with ASan) takes 10+ minutes on two cores; scripts/fuzz.sh installs cargo-fuzz if missing and
# fails if a target crashes.
if [ "${AK_OUTPOST_FUZZ_SMOKE:-}" = 1 ]; then
  FUZZ_RUNS=2000 bash scripts/fuzz.sh 0 || status=$?
fi
exit "$status"
