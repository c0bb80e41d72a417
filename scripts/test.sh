#!/usr/bin/env bash
# The whole test suite: installs what the tests need (nginx, caddy, the reference IdP's npm
# packages), then builds and runs every unit and integration test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-deps.sh
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --test-threads 2
else
  cargo test --locked --no-fail-fast -- --test-threads 2
fi
