#!/usr/bin/env bash
# Proxy mode against nginx's proxy_pass, in one run (issue 10, item 5):
#
#     bash bench/proxy.sh            # full run (~8 min once built): 3 runs of 5 s per point
#     QUICK=1 bash bench/proxy.sh    # smoke run (< 2 min once built): 2 runs of 1 s per point
#
# On loopback, wrk (1 thread) pinned to core 0 next to the reference IdP; every server pinned
# to core 1. The backend is the floor server answering 200 with a small body
# (FLOOR_BODY_BYTES, default 256). Rows, each at concurrency 1, 16 and 64, for a GET with a
# browser's session cookie:
#   p0  the backend alone (context: what the backend costs)
#   p1  nginx proxy_pass -> backend (1 worker, upstream keepalive 64): the floor for proxying
#   p2  ak-outpost in proxy mode -> backend (valid session cookie, introspection cached)
#   p3  nginx auth_request -> ak-outpost /auth/nginx, then proxy_pass -> backend
#       (nginx-examples/nginx/app.example.com.conf, rendered as bench/run.sh renders it)
#   b   ak-outpost /auth/nginx directly (the forward-auth check alone, as run.sh's (b))
# The rows are interleaved (repetition -> concurrency -> row), so that the machine's other
# work falls on all rows alike; ratios are taken within one repetition. Server CPU per
# request: utime + stime from /proc/<pid>/stat of each server process (nginx master and
# worker, the outpost, the backend) over each run, divided by the requests wrk completed.
#
# Results: bench/results/proxy-runs.csv (every run), proxy-summary.csv, proxy-summary.md.
# Environment: QUICK=1, DURATION=5s (per run), REPEATS=3 (0: no load runs, e.g. with CALLGRIND=1), FLOOR_BODY_BYTES=256,
# SKIP_BUILD=1, RESULTS=<dir>, KEEP_WORK=1, PERF=1 (flat perf profile of the outpost under
# p2 and b at c=64, bench/results/perf-proxy-*.txt), CALLGRIND=1 (instructions per request of
# the outpost for p2 and b, bench/results/proxy-callgrind.csv; OUTPOST_BIN=<binary> counts
# another build with the same session; CALLGRIND_LABEL=<name> names it in the CSV, default
# the checked-out commit; CALLGRIND_CONNECTIONS=1 as in callgrind.sh), BASELINE_BIN=<another ak-outpost build> (adds a row
# p2_baseline_proxy: that build in proxy mode, a second instance with the same config and
# session, interleaved with the others, for a same-run before/after).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
OUT="${RESULTS:-$BENCH/results}"
QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  DURATION="${DURATION:-1s}"; REPEATS="${REPEATS:-2}"; WARMUP=1s
else
  DURATION="${DURATION:-5s}"; REPEATS="${REPEATS:-3}"; WARMUP=2s
fi
BODY_BYTES="${FLOOR_BODY_BYTES:-256}"
CONCURRENCY=(1 16 64)
PROXY_HOST=app.bench.test   # the proxy-mode application
FWD_HOST=fwd.bench.test     # the forward-auth application (behind nginx, and direct)
CLIENT_ID=ak-outpost-bench
CLIENT_SECRET=bench-client-secret-0123456789abcdef-0123456789
SECRET=bench-sealing-secret-0123456789abcdef-0123456789abcdef
WRK_CPU=0
SERVER_CPU=1
if (($(nproc) < 2)); then
  echo "[proxy-bench] only one core: load generator and servers share it" >&2
  SERVER_CPU=0
fi

TAG=proxy-bench
source "$BENCH/lib.sh"

# --- dependencies and build (as bench/run.sh: static glibc, --target <host>) ----------------
for c in wrk node python3 curl taskset; do command -v "$c" >/dev/null 2>&1 || die "$c is missing (bench/run.sh installs it)"; done
bash "$ROOT/scripts/install-deps.sh" >&2
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || die "nginx is missing"
build_binaries
mkdir -p "$OUT"

# --- the IdP, the backend, the outpost, two nginx --------------------------------------------
OUTPOST_PORT="$(free_port)"
P1_PORT="$(free_port)"
P3_PORT="$(free_port)"
BACKEND_PORT="$(free_port)"
PROXY_EXTERNAL="http://$PROXY_HOST:$OUTPOST_PORT"
FWD_EXTERNAL="http://$FWD_HOST:$P3_PORT"
start_idp 3600 "$WRK_CPU" "$PROXY_EXTERNAL" "$FWD_EXTERNAL"

FLOOR_BODY_BYTES="$BODY_BYTES" taskset -c "$SERVER_CPU" "$FLOOR_BIN" "127.0.0.1:$BACKEND_PORT" >/dev/null 2>&1 &
BACKEND_PID=$!; PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/" 200

outpost_yaml() { # port
  outpost_yaml_head "127.0.0.1:$1" "" 60s
  cat <<EOF
# wrk is one client address: the per-client rate limit (on by default for peers that are not
# trusted proxies) would answer 429 after its burst. Set too high to ever limit, so the
# bucket is still looked up per request as for a browser.
limits:
  client_requests_per_second: 1000000000
  client_burst: 1000000000
applications:
  - name: proxied
    external_host: "$PROXY_EXTERNAL"
    mode: proxy
    upstream: "http://127.0.0.1:$BACKEND_PORT"
  - name: fwd
    external_host: "$FWD_EXTERNAL"
    mode: forward_single
EOF
}
outpost_yaml "$OUTPOST_PORT" >"$WORK/outpost.yaml"
taskset -c "$SERVER_CPU" "$OUTPOST_BIN" --config "$WORK/outpost.yaml" 2>>"$WORK/outpost.log" &
OUTPOST_PID=$!; PIDS+=($!)
wait_http "http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/ready" 200
log "IdP at $ISSUER; ak-outpost on :$OUTPOST_PORT (pid $OUTPOST_PID); backend on :$BACKEND_PORT ($BODY_BYTES-byte body)"
BASELINE_PID=""
if [[ -n "${BASELINE_BIN:-}" ]]; then
  BASE_PORT="$(free_port)"
  outpost_yaml "$BASE_PORT" >"$WORK/outpost-baseline.yaml"
  taskset -c "$SERVER_CPU" "$BASELINE_BIN" --config "$WORK/outpost-baseline.yaml" 2>>"$WORK/outpost-baseline.log" &
  BASELINE_PID=$!; PIDS+=($!)
  wait_http "http://127.0.0.1:$BASE_PORT/outpost.goauthentik.io/ready" 200
  log "baseline $BASELINE_BIN on :$BASE_PORT (pid $BASELINE_PID)"
fi

login() { # host -> cookie header value
  "$TOOL" login --outpost "127.0.0.1:$OUTPOST_PORT" --host "$1" --user alice \
    --password alice-password --secret "$SECRET" --client-id "$CLIENT_ID" >"$WORK/login-$1.json"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cookie"])' "$WORK/login-$1.json"
}
PROXY_COOKIE="$(login "$PROXY_HOST")"
FWD_COOKIE="$(login "$FWD_HOST")"
log "logged in through the outpost twice: session cookies of ${#PROXY_COOKIE} and ${#FWD_COOKIE} bytes"

# p1: nginx as a plain reverse proxy in front of the backend, with the app headers of
# nginx-examples/nginx/app.example.com.conf and upstream keepalive (as the auth upstream there).
mkdir -p "$WORK/nginx-p1"
cat >"$WORK/nginx-p1/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
error_log $WORK/nginx-p1/error.log warn;
pid $WORK/nginx-p1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-p1/client_body;
    proxy_temp_path $WORK/nginx-p1/proxy;
    fastcgi_temp_path $WORK/nginx-p1/fastcgi;
    uwsgi_temp_path $WORK/nginx-p1/uwsgi;
    scgi_temp_path $WORK/nginx-p1/scgi;
    upstream bench_backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$P1_PORT reuseport backlog=4096;
        server_name $PROXY_HOST;
        location / {
            proxy_pass http://bench_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
start_nginx() { # dir conf -> NGINX_PID
  "$NGINX" -t -p "$1" -c "$2" >"$1/test.log" 2>&1 || { cat "$1/test.log" >&2; die "nginx -t failed for $2"; }
  taskset -c "$SERVER_CPU" "$NGINX" -p "$1" -c "$2" >"$1/stdout.log" 2>&1 &
  NGINX_PID=$!; PIDS+=($!)
}
start_nginx "$WORK/nginx-p1" "$WORK/nginx-p1/nginx.conf"; P1_PID=$NGINX_PID
# p3: the shipped example, the app behind a keepalive upstream (render_nginx.py app-keepalive).
P3_CONF="$(python3 "$BENCH/render_nginx.py" plain "$WORK/nginx-p3" "$P3_PORT" "127.0.0.1:$OUTPOST_PORT" \
  "127.0.0.1:$BACKEND_PORT" "$FWD_HOST" app-keepalive)"
start_nginx "$WORK/nginx-p3" "$P3_CONF"; P3_PID=$NGINX_PID

PATHQ="/dashboard/?tab=1"
H_BROWSER=(-H "User-Agent: wrk" -H "Accept: text/html")
# Each row: name, url, expected status, then the wrk -H arguments.
declare -A URL WANT
declare -A HDRS
URL[p0_backend]="http://127.0.0.1:$BACKEND_PORT$PATHQ"
HDRS[p0_backend]="Host: $PROXY_HOST|Cookie: $PROXY_COOKIE"
URL[p1_nginx_proxy]="http://127.0.0.1:$P1_PORT$PATHQ"
HDRS[p1_nginx_proxy]="Host: $PROXY_HOST|Cookie: $PROXY_COOKIE"
URL[p2_outpost_proxy]="http://127.0.0.1:$OUTPOST_PORT$PATHQ"
HDRS[p2_outpost_proxy]="Host: $PROXY_HOST|Cookie: $PROXY_COOKIE"
URL[p3_nginx_auth_request]="http://127.0.0.1:$P3_PORT$PATHQ"
HDRS[p3_nginx_auth_request]="Host: $FWD_HOST:$P3_PORT|Cookie: $FWD_COOKIE"
URL[b_auth_nginx]="http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/auth/nginx"
HDRS[b_auth_nginx]="Host: $FWD_HOST|X-Original-URL: $FWD_EXTERNAL$PATHQ|Cookie: $FWD_COOKIE"
ROWS=(p0_backend p1_nginx_proxy p2_outpost_proxy p3_nginx_auth_request b_auth_nginx)
if [[ -n "$BASELINE_PID" ]]; then
  URL[p2_baseline_proxy]="http://127.0.0.1:$BASE_PORT$PATHQ"
  HDRS[p2_baseline_proxy]="${HDRS[p2_outpost_proxy]}"
  ROWS+=(p2_baseline_proxy)
fi
wrk_headers() { # row -> WH array of wrk -H args
  local IFS='|' h
  WH=("${H_BROWSER[@]}")
  for h in ${HDRS[$1]}; do WH+=(-H "$h"); done
}

# CPU ticks (utime + stime, all threads, live or exited) of a process and its children.
ticks_of() {
  local p="$1" q t=0
  [[ -n "$p" ]] || { echo 0; return; }
  for q in $p $(pgrep -P "$p" 2>/dev/null || true); do
    [[ -r "/proc/$q/stat" ]] || continue
    t=$((t + $(sed 's/.*) //' "/proc/$q/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}
all_ticks() { echo "$(ticks_of "$P1_PID") $(ticks_of "$P3_PID") $(ticks_of "$OUTPOST_PID") $(ticks_of "$BACKEND_PID") $(ticks_of "$BASELINE_PID")"; }

# Checks: the expected status with curl, the backend's body through each proxy, then a wrk
# warm-up whose answers must all be 200.
for row in "${ROWS[@]}"; do
  wrk_headers "$row"
  curl_args=()
  for a in "${WH[@]}"; do [[ "$a" == -H ]] || curl_args+=(-H "$a"); done
  got="$(curl -s -o "$WORK/body-$row" -D "$WORK/head-$row" -w '%{http_code}' "${curl_args[@]}" "${URL[$row]}")"
  [[ "$got" == 200 ]] || die "$row: expected 200, got $got from ${URL[$row]}"
  if [[ "$row" != b_auth_nginx ]]; then
    [[ "$(stat -c %s "$WORK/body-$row")" == "$BODY_BYTES" ]] || die "$row: body of $(stat -c %s "$WORK/body-$row") bytes, not $BODY_BYTES"
  fi
  line="$(taskset -c "$WRK_CPU" wrk -t1 -c16 -d"$WARMUP" --timeout 5s -s "$BENCH/wrk/report.lua" "${WH[@]}" "${URL[$row]}" | sed -n 's/^BENCH //p')"
  python3 "$BENCH/report.py" check-warmup "$row" 200 "$line"
done
# What the backend saw from each proxy (for the notes): one request's headers, by size.
log "checks passed; response heads: p1 $(wc -c <"$WORK/head-p1_nginx_proxy") B, p2 $(wc -c <"$WORK/head-p2_outpost_proxy") B"

RUNS_CSV="$OUT/proxy-runs.csv"
echo "rep,target,concurrency,rps,p50_us,p90_us,p99_us,max_us,requests,non_2xx,socket_errors,duration_s,ticks_nginx_p1,ticks_nginx_p3,ticks_outpost,ticks_backend,ticks_baseline,clk_tck" >"$RUNS_CSV"
CLK="$(getconf CLK_TCK)"
part="${DURATION%s}"
for ((rep = 1; rep <= REPEATS; rep++)); do
  for c in "${CONCURRENCY[@]}"; do
    # Rotate the order of the rows between repetitions.
    n=${#ROWS[@]}
    for ((k = 0; k < n; k++)); do
      row="${ROWS[$(((k + rep - 1) % n))]}"
      wrk_headers "$row"
      read -r a1 a3 ao ab az < <(all_ticks)
      line="$(taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d"${part}s" --timeout 5s -s "$BENCH/wrk/report.lua" "${WH[@]}" "${URL[$row]}" \
        | sed -n 's/^BENCH //p')"
      read -r b1 b3 bo bb bz < <(all_ticks)
      [[ -n "$line" ]] || die "wrk produced no result for $row c=$c"
      python3 - "$line" "$rep" "$row" "$c" "$((b1 - a1))" "$((b3 - a3))" "$((bo - ao))" "$((bb - ab))" "$((bz - az))" "$CLK" >>"$RUNS_CSV" <<'EOF'
import json, sys
j = json.loads(sys.argv[1]); rep, row, c, t1, t3, to, tb, tz, clk = sys.argv[2:]
errs = j["err_connect"] + j["err_read"] + j["err_write"] + j["err_timeout"]
print(f'{rep},{row},{c},{j["rps"]:.1f},{j["p50_us"]},{j["p90_us"]},{j["p99_us"]},{j["max_us"]},'
      f'{j["requests"]},{j["err_status"]},{errs},{j["duration_us"] / 1e6:.3f},{t1},{t3},{to},{tb},{tz},{clk}')
EOF
      log "rep $rep c=$c $row: $(tail -1 "$RUNS_CSV" | cut -d, -f4) req/s"
    done
  done
done

# --- optional: where the outpost's time goes ---------------------------------------------------
if [[ "${PERF:-0}" == 1 ]]; then
  command -v perf >/dev/null 2>&1 || die "PERF=1 but perf is not installed"
  for row in p2_outpost_proxy b_auth_nginx; do
    wrk_headers "$row"
    log "perf profile of the outpost: $row, c=64"
    perf record -q -F 1999 -o "$WORK/perf-$row.data" -p "$OUTPOST_PID" -- sleep 5 >/dev/null 2>&1 &
    perf_pid=$!
    taskset -c "$WRK_CPU" wrk -t1 -c64 -d6s "${WH[@]}" "${URL[$row]}" >/dev/null
    wait "$perf_pid" || true
    (
      set +o pipefail
      echo "# perf record -F 1999 -p <ak-outpost> during wrk -t1 -c64 -d6s ($row); by DSO, then by symbol (self)"
      perf report -i "$WORK/perf-$row.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | sed 's/ *$//'
      perf report -i "$WORK/perf-$row.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | sed 's/ *- *- *$//; s/ *$//' | head -150
    ) >"$OUT/perf-proxy-$row.txt"
  done
fi

if [[ "${CALLGRIND:-0}" == 1 ]]; then
  command -v valgrind >/dev/null 2>&1 || die "CALLGRIND=1 but valgrind is not installed"
  log "instructions per request of the outpost under callgrind (p2 and b)"
  kill -TERM "$OUTPOST_PID"; wait "$OUTPOST_PID" 2>/dev/null || true
  keep=(); for q in "${PIDS[@]}"; do [[ "$q" == "$OUTPOST_PID" ]] || keep+=("$q"); done; PIDS=("${keep[@]}")
  CG="$OUT/proxy-callgrind.csv"
  [[ -f "$CG" ]] || echo "target,instructions_per_request,requests,binary" >"$CG"
  taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$OUTPOST_BIN" --config "$WORK/outpost.yaml" >"$WORK/cg.stdout" 2>"$WORK/cg.stderr" &
  VG=$!; PIDS+=($!)
  for _ in $(seq 600); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/ready")" == 200 ]] && break
    sleep 0.1
  done
  dumps=0
  for row in p2_outpost_proxy b_auth_nginx; do
    wrk_headers "$row"
    taskset -c "$WRK_CPU" wrk -t1 -c"${CALLGRIND_CONNECTIONS:-4}" -d2s "${WH[@]}" "${URL[$row]}" >/dev/null
    callgrind_control -z "$VG" >/dev/null
    n="$(taskset -c "$WRK_CPU" wrk -t1 -c"${CALLGRIND_CONNECTIONS:-4}" -d4s "${WH[@]}" "${URL[$row]}" | awk '/requests in/{print $1}')"
    callgrind_control -d "$VG" >/dev/null
    dumps=$((dumps + 1)); f="$WORK/cg.out.$dumps"; total=""
    for _ in $(seq 100); do
      total="$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f" 2>/dev/null || true)"; [[ -n "$total" ]] && break; sleep 0.1
    done
    [[ -n "$total" && -n "$n" && "$n" -gt 0 ]] || die "callgrind: no count for $row"
    echo "$row,$((total / n)),$n,${CALLGRIND_LABEL:-$(git -C "$ROOT" log -1 --format=%h 2>/dev/null || basename "$OUTPOST_BIN")}" >>"$CG"
    if [[ -n "${CALLGRIND_KEEP:-}" ]]; then mkdir -p "$CALLGRIND_KEEP"; cp "$f" "$CALLGRIND_KEEP/$row.callgrind"; fi
    log "callgrind $row: $((total / n)) instructions per request ($n requests)"
  done
fi

if ((REPEATS > 0)); then
  python3 "$BENCH/proxy_report.py" "$RUNS_CSV" "$OUT" "$QUICK" "$DURATION" "$REPEATS" "$BODY_BYTES"
  log "done: $OUT/proxy-summary.md"
fi
