#!/usr/bin/env bash
# Soak: a bounded mixed load against one ak-outpost (release build, as shipped) on loopback,
# reporting errors per kind, latency p50/p99 and the outpost's RSS over time.
#
#     bash bench/soak.sh                       # 5 minutes, 200 checks/s + 1 login/s
#     SOAK_DURATION=180 bash bench/soak.sh     # 3 minutes
#
# The mix (bench-tool soak): of every 20 checks 16 carry the valid session cookie (200),
# 2 an invalid cookie, a different one every time (401), 2 the session's access token as a
# Bearer token (200); besides, once per SOAK_LOGIN_EVERY_MS, a full login (/start -> the IdP's
# form -> /callback), /sign_out with that new session (302) and a check with the signed-out
# cookie (401). An error is any other status or a transport error.
# VmRSS of the outpost is sampled every SOAK_SAMPLE seconds; growth is the last sample against
# the first one after SOAK_WARMUP seconds. Target: zero errors, growth < 5 %. Each sample also
# splits RSS into the process's own memory (RssAnon: a leak grows this) and pages mapped from
# the binary (RssFile: grows when a code path runs for the first time). The outpost's bounded sets fill for their TTL (used
# login states: 31 minutes), so a run that should show a steady state needs
# SOAK_WARMUP > 1860 (e.g. SOAK_DURATION=3600 SOAK_WARMUP=1900).
#
# Environment: SOAK_DURATION=300 (s), SOAK_RATE=200 (checks/s), SOAK_WARMUP=60 (s),
# SOAK_SAMPLE=10 (s), SOAK_LOGIN_EVERY_MS=1000, SOAK_CACHE_TTL=60s (introspection cache),
# RESULTS=<dir> (default bench/results), KEEP_WORK=1, SKIP_BUILD=1 (use the binaries already in
# the packaging target dir). The build goes to ${CARGO_TARGET_DIR:-target}/packaging.
# Exit status 1 if the target is missed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
OUT="${RESULTS:-$BENCH/results}"
DURATION="${SOAK_DURATION:-300}"
RATE="${SOAK_RATE:-200}"
WARMUP="${SOAK_WARMUP:-60}"
SAMPLE="${SOAK_SAMPLE:-10}"
LOGIN_EVERY_MS="${SOAK_LOGIN_EVERY_MS:-1000}"
CACHE_TTL="${SOAK_CACHE_TTL:-60s}"
((DURATION <= 3600)) || { echo "SOAK_DURATION is capped at 3600 s" >&2; exit 2; }
((WARMUP < DURATION)) || WARMUP=$((DURATION / 5))
APP_HOST=app.bench.test
CLIENT_ID=ak-outpost-bench
CLIENT_SECRET=bench-client-secret-0123456789abcdef-0123456789
SECRET=bench-sealing-secret-0123456789abcdef-0123456789abcdef
LOAD_CPU=0
SERVER_CPU=1
(($(nproc) >= 2)) || { LOAD_CPU=0; SERVER_CPU=0; }

TAG=soak
source "$BENCH/lib.sh"

# --- dependencies and build (as bench/run.sh: static glibc, --target <host>) ----------------
bash "$ROOT/scripts/install-deps.sh" >&2
for c in node python3 curl taskset; do command -v "$c" >/dev/null 2>&1 || die "$c is missing"; done
build_binaries

# --- the IdP and the outpost ------------------------------------------------------------------
OUTPOST_PORT="$(free_port)"
EXTERNAL="http://$APP_HOST"
start_idp 7200 "$LOAD_CPU" "$EXTERNAL"

outpost_yaml_app "127.0.0.1:$OUTPOST_PORT" "$CACHE_TTL" "$EXTERNAL" warn >"$WORK/outpost.yaml"
taskset -c "$SERVER_CPU" "$OUTPOST_BIN" --config "$WORK/outpost.yaml" 2>>"$WORK/outpost.log" &
OUTPOST_PID=$!; PIDS+=($!)
wait_http "http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/ready" 200
log "IdP at $ISSUER; ak-outpost on :$OUTPOST_PORT (pid $OUTPOST_PID); ${DURATION}s at $RATE checks/s"

# --- the load ---------------------------------------------------------------------------------
mkdir -p "$OUT"
set +e
taskset -c "$LOAD_CPU" "$TOOL" soak --outpost "127.0.0.1:$OUTPOST_PORT" --host "$APP_HOST" \
  --url "$EXTERNAL/dashboard/?tab=1" --secret "$SECRET" --client-id "$CLIENT_ID" \
  --user alice --password alice-password --pid "$OUTPOST_PID" --out-dir "$OUT" \
  --duration "$DURATION" --rate "$RATE" --warmup "$WARMUP" --sample "$SAMPLE" \
  --login-every-ms "$LOGIN_EVERY_MS" >"$OUT/soak.json"
rc=$?
set -e
((rc == 0)) || die "bench-tool soak failed ($rc)"
kill -0 "$OUTPOST_PID" 2>/dev/null || die "the outpost died during the soak"
python3 - "$OUT/soak.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok = s["errors"] == 0 and s["rss_growth_pct"] < 5
print(f"soak: {s['seconds']:.0f} s, {s['requests']} requests, {s['errors']} errors; RSS "
      f"{s['rss_warm_kib']} KiB after warm-up -> {s['rss_end_kib']} KiB at the end "
      f"({s['rss_growth_pct']:+.2f} %; own memory {s['anon_warm_kib']} -> {s['anon_end_kib']} KiB, "
      f"mapped files {s['file_warm_kib']} -> {s['file_end_kib']} KiB); "
      f"target {'met' if ok else 'MISSED'} (zero errors, growth < 5 %)")
sys.exit(0 if ok else 1)
PY
log "results: $OUT/soak.csv, $OUT/soak-rss.csv, $OUT/soak.json"
