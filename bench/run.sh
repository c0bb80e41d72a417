#!/usr/bin/env bash
# The ak-outpost benchmark suite. One command, from any directory:
#
#     bash bench/run.sh            # full run (~12 min): 10 s per point, 100,000 sessions
#     QUICK=1 bash bench/run.sh    # smoke run (< 2 min): 2 s per point, 5,000 sessions
#
# It installs what it needs (wrk, nginx + modules, the reference IdP's npm packages), builds
# release binaries (ak-outpost, the floor server, bench-tool), then on loopback measures
# requests/s and latency p50/p99 at concurrency 1, 16 and 64 with wrk (1 thread, pinned to
# core 0; every server pinned to core 1) for:
#   a  floor: minimal hyper server, 200 + five identity headers, no logic
#   a' the same floor answering with the outpost's exact (b) response headers (informative)
#   b  /auth/nginx with a valid session cookie, introspection cached
#   c  /auth/nginx without a cookie (401)
#   d  Bearer header auth, cache hit
#   e  Bearer header auth, cache miss (a fresh token per request, introspected at the IdP)
#   f  nginx auth_request -> ak-outpost vs -> floor, full request to an app, with upstream
#      keepalive (nginx/app.example.com.conf) and without (SWAG's variable proxy_pass)
# plus memory (RSS idle, with 100,000 cached sessions, VmHWM under load), start-up time
# (exec -> first 204 on /ping) and the criterion micro-benchmarks (benches/auth_path.rs).
#
# Results: bench/results/{runs.csv,summary.csv,memory.csv,micro.csv,run.json,summary.md,plot.svg};
# a full run also refreshes the generated part of BENCHMARKS.md.
# Environment: QUICK=1, DURATION=10s, SKIP_MICRO=1, SKIP_NGINX=1, SKIP_CALLGRIND=1,
# CALLGRIND_BIN=<another build to count>, CALLGRIND_KEEP=<dir> (keep the callgrind dumps),
# RESULTS=<dir> (instead of bench/results; then BENCHMARKS.md is left alone), KEEP_WORK=1
# (keep the temp dir),
# PERF=1 (also write flat perf profiles of the outpost under (b) and (c) load to bench/results/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
OUT="${RESULTS:-$BENCH/results}"
QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  DURATION="${DURATION:-2s}"; WARMUP=1s; SESSIONS=5000; E_TOKENS=2000; STARTUP_RUNS=10
else
  # (e) gets 30,000 cold tokens per point: more than 10 s at the IdP's pace needs.
  DURATION="${DURATION:-10s}"; WARMUP=3s; SESSIONS=100000; E_TOKENS=30000; STARTUP_RUNS=40
fi
CONCURRENCY=(1 16 64)
APP_HOST=app.bench.test
CLIENT_ID=ak-outpost-bench
CLIENT_SECRET=bench-client-secret-0123456789abcdef-0123456789
SECRET=bench-sealing-secret-0123456789abcdef-0123456789abcdef
WRK_CPU=0
SERVER_CPU=1
if (($(nproc) < 2)); then
  echo "[bench] only one core: load generator and servers share it (numbers are lower)" >&2
  WRK_CPU=0; SERVER_CPU=0
fi

TAG=bench
source "$BENCH/lib.sh"

stop_pid() { # stop one process we started, and forget it
  local p="$1" q keep=()
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  for q in "${PIDS[@]}"; do [[ "$q" == "$p" ]] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

mem_of() { # pid -> "rss_kib hwm_kib"
  awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} END{print r, h}' "/proc/$1/status"
}

# --- 1. dependencies ------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null; }
fi
if ! command -v valgrind >/dev/null 2>&1 && [[ "${SKIP_CALLGRIND:-0}" != 1 ]]; then
  log "installing valgrind (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq valgrind >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq valgrind >/dev/null; }
fi
bash "$ROOT/scripts/install-deps.sh" >&2
for c in wrk nginx node python3 curl taskset; do
  command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || die "$c is missing"
done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# --- 2. build -------------------------------------------------------------------------------
# The outpost is built as the Dockerfile builds it (static glibc, `--target <host>`; the same
# target dir as the packaging test), so what is measured is what ships; the floor the same way.
log "building release binaries (static, as shipped)"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
PKG_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/packaging"
STATIC_FLAGS="-C target-feature=+crt-static"
(cd "$ROOT" && RUSTFLAGS="$STATIC_FLAGS" cargo build --release --quiet --locked --bin ak-outpost \
  --target "$TRIPLE" --target-dir "$PKG_DIR")
(cd "$BENCH" && RUSTFLAGS="$STATIC_FLAGS" cargo build --release --quiet --target "$TRIPLE" \
  --target-dir "$PKG_DIR")
OUTPOST_BIN="$PKG_DIR/$TRIPLE/release/ak-outpost"
FLOOR_BIN="$PKG_DIR/$TRIPLE/release/floor"
TOOL="$PKG_DIR/$TRIPLE/release/bench-tool"

mkdir -p "$OUT"
RUNS_CSV="$OUT/runs.csv"
MEM_CSV="$OUT/memory.csv"
echo "target,setup,concurrency,rps,p50_us,p90_us,p99_us,max_us,requests,non_2xx,socket_errors,token_wraps,duration,server_cpu_us_per_req,server_cpu_split_us" >"$RUNS_CSV"
echo "what,value,unit,note" >"$MEM_CSV"
# The code layout (build.rs, bench/symbol-order.sh): how many of the functions the order file
# names the binary has. Fewer means the file is stale: regenerate it.
ORDER_FILE="$ROOT/build/symbol-order.txt"
if [[ -f "$ORDER_FILE" ]] && command -v nm >/dev/null 2>&1; then
  listed="$(grep -cv '^#' "$ORDER_FILE" || true)"
  found="$(grep -v '^#' "$ORDER_FILE" | sort -u | comm -12 - <(nm "$OUTPOST_BIN" | awk '{print $NF}' | sort -u) | wc -l)"
  echo "symbol_order_found,$found,names,of the $listed functions in build/symbol-order.txt found in the binary (code layout)" >>"$MEM_CSV"
  ((found * 10 >= listed * 9)) || log "warning: only $found of $listed names in build/symbol-order.txt match; run bench/symbol-order.sh"
fi

# --- 3. micro-benchmarks (criterion) --------------------------------------------------------
if [[ "${SKIP_MICRO:-0}" != 1 ]]; then
  log "criterion micro-benchmarks (benches/auth_path.rs)"
  CRITERION_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/criterion"
  rm -rf "$CRITERION_DIR/hot_path"
  (cd "$ROOT" && BENCH_QUICK="$QUICK" taskset -c "$SERVER_CPU" cargo bench --quiet --bench auth_path) >"$WORK/criterion.log" 2>&1 \
    || { cat "$WORK/criterion.log" >&2; die "cargo bench failed"; }
  python3 "$BENCH/report.py" micro "$CRITERION_DIR" "$OUT/micro.csv"
fi

# --- 4. the reference IdP, the floor and the app --------------------------------------------
NGINX_PORT="$(free_port)"
EXTERNAL="http://$APP_HOST:$NGINX_PORT"
# The IdP shares core 0 with wrk: core 1 stays for the server under test.
start_idp 3600 "$WRK_CPU" "$EXTERNAL"
log "IdP at $ISSUER"

start_floor() { # port -> pid
  taskset -c "$SERVER_CPU" "$FLOOR_BIN" "127.0.0.1:$1" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$1/" 200
}
FLOOR_PORT="$(free_port)"; start_floor "$FLOOR_PORT"; FLOOR_PID="${PIDS[-1]}"
APP_PORT="$(free_port)"; start_floor "$APP_PORT"; APP_PID="${PIDS[-1]}"

outpost_yaml() { # port cache-ttl
  outpost_yaml_app "127.0.0.1:$1" "$2" "$EXTERNAL"
}

start_outpost() { # port cache-ttl -> sets OUTPOST_PID
  outpost_yaml "$1" "$2" >"$WORK/outpost-$1.yaml"
  taskset -c "$SERVER_CPU" "$OUTPOST_BIN" --config "$WORK/outpost-$1.yaml" 2>>"$WORK/outpost.log" &
  OUTPOST_PID=$!; PIDS+=($!)
  wait_http "http://127.0.0.1:$1/outpost.goauthentik.io/ready" 200
}

OUTPOST_PORT="$(free_port)"
start_outpost "$OUTPOST_PORT" 60s
sleep 1 # idle: a second after /ready first answered 200
read -r rss hwm < <(mem_of "$OUTPOST_PID")
echo "outpost_rss_idle,$rss,KiB,after start-up and provider discovery; no request yet" >>"$MEM_CSV"
read -r rss hwm < <(mem_of "$FLOOR_PID")
echo "floor_rss_idle,$rss,KiB,floor server after start-up" >>"$MEM_CSV"
log "ak-outpost on :$OUTPOST_PORT (pid $OUTPOST_PID), floor on :$FLOOR_PORT, app on :$APP_PORT"

# --- 5. a real session and cold tokens -------------------------------------------------------
"$TOOL" login --outpost "127.0.0.1:$OUTPOST_PORT" --host "$APP_HOST" --user alice \
  --password alice-password --secret "$SECRET" --client-id "$CLIENT_ID" >"$WORK/login.json"
COOKIE="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cookie"])' "$WORK/login.json")"
ACCESS="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$WORK/login.json")"
REFRESH="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["refresh_token"])' "$WORK/login.json")"
log "logged in through the outpost: session cookie of ${#COOKIE} bytes"
for _ in 1 2 3 4 5; do
  curl -s -o /dev/null -H "Host: $APP_HOST" -H "X-Original-URL: $EXTERNAL/dashboard/?tab=1" -H "Cookie: $COOKIE" \
    "http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/auth/nginx"
done
read -r rss hwm < <(mem_of "$OUTPOST_PID")
echo "outpost_rss_first_checks,$rss,KiB,after the login and the first five checks; idle" >>"$MEM_CSV"
# Of which: pages of the binary (shared with the page cache) and the process's own memory.
read -r anon file < <(awk '/^RssAnon:/{a=$2} /^RssFile:/{f=$2} END{print a, f}' "/proc/$OUTPOST_PID/status")
echo "outpost_rss_first_checks_file,$file,KiB,of which mapped from the binary (RssFile)" >>"$MEM_CSV"
echo "outpost_rss_first_checks_anon,$anon,KiB,of which the process's own (RssAnon: heap, stacks)" >>"$MEM_CSV"
NEED=$((E_TOKENS * ${#CONCURRENCY[@]} + 200))
((SESSIONS > NEED)) && NEED=$SESSIONS
log "minting $NEED access tokens at the IdP (refresh grants)"
"$TOOL" mint --issuer "$ISSUER" --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
  --refresh-token "$REFRESH" --count "$NEED" --concurrency 16 --out "$WORK/tokens.txt" >"$WORK/mint.json"
log "minted: $(cat "$WORK/mint.json")"

# --- 6. direct runs --------------------------------------------------------------------------
AUTH_PATH=/outpost.goauthentik.io/auth/nginx
ORIGINAL="$EXTERNAL/dashboard/?tab=1"

# run_wrk target setup concurrency duration url [wrk -H args...]; appends to runs.csv
# CPU_PIDS: the server processes whose CPU time (all threads) is charged to the
# run, to report server CPU per request next to throughput.
# For (f) the split is reported too: nginx, the auth server (outpost or floor), the app.
CPU_PIDS=()
# Time on the CPU in nanoseconds (the scheduler's count, /proc/<pid>/task/<tid>/schedstat,
# summed over the threads), not the 10 ms ticks of /proc/<pid>/stat: a 5 s run of a process
# that shares its core has only a few dozen of those.
cpu_ns() { # CPU time (ns) of each of CPU_PIDS with its child processes, space-separated
  local p q t kids out=()
  for p in "${CPU_PIDS[@]}"; do
    t=0
    kids="$(pgrep -P "$p" 2>/dev/null || true)"
    for q in $p $kids; do
      t=$((t + $(cat /proc/"$q"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}')))
    done
    out+=("$t")
  done
  echo "${out[*]}"
}
cpu_between() { # "a b c" "a' b' c'" -> "a'-a b'-b c'-c"
  python3 -c 'import sys; print(" ".join(str(int(y) - int(x)) for x, y in zip(sys.argv[1].split(), sys.argv[2].split())))' "$1" "$2"
}
# The machine may be shared: other work only ever slows a run down, so each point is the
# faster of REPEATS runs of duration/REPEATS (default 2; e runs once: its tokens are cold once).
run_wrk() {
  local target="$1" setup="$2" conc="$3" dur="$4" url="$5"; shift 5
  local reps="${REPEATS:-2}" line t0 t1 best="" best_cpu=0 best_rps=-1 rps part
  part="$(( ${dur%s} / reps ))"; ((part >= 1)) || part=1
  for ((i = 0; i < reps; i++)); do
    t0="$(cpu_ns)"
    line="$(taskset -c "$WRK_CPU" wrk -t1 -c"$conc" -d"${part}s" --timeout 5s -s "$BENCH/wrk/report.lua" "$@" "$url" \
      | sed -n 's/^BENCH //p')"
    t1="$(cpu_ns)"
    [[ -n "$line" ]] || die "wrk produced no result for $target c=$conc"
    rps="$(python3 -c 'import json,sys; print(int(float(json.loads(sys.argv[1])["rps"])))' "$line")"
    if ((rps > best_rps)); then best="$line"; best_rps="$rps"; best_cpu="$(cpu_between "$t0" "$t1")"; fi
  done
  python3 "$BENCH/report.py" row "$RUNS_CSV" "$target" "$setup" "$conc" "${part}s" "$best" \
    "$best_cpu"
}

# in_two_rounds <function> <item>...: `function <round> <item>` for every item, then again in
# reverse order, so that no item gains from its place in the sequence (with REPEATS=1 and
# half the duration per call, report.py keeps the faster of the two runs of a point).
in_two_rounds() {
  local fn="$1" k n; shift
  n=$#
  for ((k = 1; k <= n; k++)); do "$fn" 1 "${!k}"; done
  for ((k = n; k >= 1; k--)); do "$fn" 2 "${!k}"; done
}

# warm target url expect-status [wrk -H args...]: a curl check, then a short wrk warm-up whose
# status codes must all be what the check saw.
check_and_warm() {
  local target="$1" url="$2" want="$3"; shift 3
  local curl_args=() a got
  for a in "$@"; do [[ "$a" == -H ]] || curl_args+=(-H "$a"); done
  got="$(curl -s -o /dev/null -w '%{http_code}' "${curl_args[@]}" "$url")"
  [[ "$got" == "$want" ]] || die "$target: expected $want, got $got from $url"
  local line
  line="$(taskset -c "$WRK_CPU" wrk -t1 -c16 -d"$WARMUP" --timeout 5s -s "$BENCH/wrk/report.lua" "$@" "$url" | sed -n 's/^BENCH //p')"
  python3 "$BENCH/report.py" check-warmup "$target" "$want" "$line"
}

OP="http://127.0.0.1:$OUTPOST_PORT$AUTH_PATH"
FL="http://127.0.0.1:$FLOOR_PORT$AUTH_PATH"
H_COMMON=(-H "Host: $APP_HOST" -H "X-Original-URL: $ORIGINAL" -H "User-Agent: wrk" -H "Accept: text/html")

# (a'): a second floor that answers with the outpost's exact (b) response headers, to tell the
# cost of the response's size (13 headers, the JWT) from the cost of the outpost's logic.
curl -s -o /dev/null -D "$WORK/b-response.txt" -H "Host: $APP_HOST" -H "X-Original-URL: $ORIGINAL" \
  -H "User-Agent: wrk" -H "Accept: text/html" -H "Cookie: $COOKIE" "$OP"
head -1 "$WORK/b-response.txt" | grep -q ' 200' || die "(b) check did not answer 200: $(head -1 "$WORK/b-response.txt")"
FLOOR2_PORT="$(free_port)"
taskset -c "$SERVER_CPU" "$FLOOR_BIN" "127.0.0.1:$FLOOR2_PORT" "$WORK/b-response.txt" >/dev/null 2>&1 &
PIDS+=($!); FLOOR2_PID=$!
wait_http "http://127.0.0.1:$FLOOR2_PORT/" 200
FL2="http://127.0.0.1:$FLOOR2_PORT$AUTH_PATH"

# direct_point target concurrency duration [check]: one run of a direct target (with check:
# the curl check and warm-up instead). The server, URL, expected status and headers by target.
direct_point() {
  local target="$1" c="$2" dur="$3" url want=200 h=("${H_COMMON[@]}")
  case "$target" in
    a_floor) url="$FL"; CPU_PIDS=("$FLOOR_PID"); h+=(-H "Cookie: $COOKIE") ;;
    a2_floor_same_response) url="$FL2"; CPU_PIDS=("$FLOOR2_PID"); h+=(-H "Cookie: $COOKIE") ;;
    b_cookie_cached) url="$OP"; CPU_PIDS=("$OUTPOST_PID"); h+=(-H "Cookie: $COOKIE") ;;
    c_no_cookie) url="$OP"; CPU_PIDS=("$OUTPOST_PID"); want=401 ;;
    d_bearer_hit) url="$OP"; CPU_PIDS=("$OUTPOST_PID"); h+=(-H "Authorization: Bearer $ACCESS") ;;
    *) die "unknown direct target $target" ;;
  esac
  if [[ "${4:-}" == check ]]; then
    check_and_warm "$target" "$url" "$want" "${h[@]}"
  else
    log "$target c=$c"
    REPEATS=1 run_wrk "$target" direct "$c" "$dur" "$url" "${h[@]}"
  fi
}
# As the nginx rows below: two rounds, the second in reverse order, one run of half the time
# per point in each, the faster kept; so the floor and the outpost share the machine's moods.
DIRECT_TARGETS=(a_floor a2_floor_same_response b_cookie_cached c_no_cookie d_bearer_hit)
for t in "${DIRECT_TARGETS[@]}"; do direct_point "$t" 0 0 check; done
HALF="$(( ${DURATION%s} / 2 ))s"; [[ "$HALF" != 0s ]] || HALF=1s
direct_all_c() { # round target
  local c
  for c in "${CONCURRENCY[@]}"; do direct_point "$2" "$c" "$HALF"; done
}
in_two_rounds direct_all_c "${DIRECT_TARGETS[@]}"
stop_pid "$FLOOR2_PID"
read -r rss hwm < <(mem_of "$OUTPOST_PID")
echo "outpost_hwm_valid_load,$hwm,KiB,VmHWM after (b)–(d): valid-session and Bearer checks at c up to 64" >>"$MEM_CSV"

# (e): every request a token the outpost has never seen. Disjoint slices per point; the
# Set-Cookie the outpost answers with is not sent back (wrk keeps no cookies).
sed -n "1,100p" "$WORK/tokens.txt" >"$WORK/e-warm.txt"
BENCH_TOKENS="$WORK/e-warm.txt" check_and_warm e_bearer_miss "$OP" 200 "${H_COMMON[@]}" -H "Authorization: Bearer $ACCESS"
CPU_PIDS=("$OUTPOST_PID")
i=0
for c in "${CONCURRENCY[@]}"; do
  from=$((200 + i * E_TOKENS + 1)); to=$((200 + (i + 1) * E_TOKENS))
  sed -n "${from},${to}p" "$WORK/tokens.txt" >"$WORK/e-$c.txt"
  log "e_bearer_miss c=$c ($E_TOKENS cold tokens)"
  REPEATS=1 BENCH_TOKENS="$WORK/e-$c.txt" run_wrk e_bearer_miss direct "$c" "$DURATION" "$OP" "${H_COMMON[@]}"
  i=$((i + 1))
done
# Optional flat CPU profiles of the outpost at c=64 (not part of the table): PERF=1.
if [[ "${PERF:-0}" == 1 ]]; then
  if command -v perf >/dev/null 2>&1; then
    profile() { # name [wrk -H args...]
      local name="$1"; shift
      log "perf profile: $name, c=64"
      perf record -q -F 1999 -o "$WORK/perf-$name.data" -p "$OUTPOST_PID" -- sleep 5 >/dev/null 2>&1 &
      local perf_pid=$!
      taskset -c "$WRK_CPU" wrk -t1 -c64 -d6s -s "$BENCH/wrk/report.lua" "$@" "$OP" >/dev/null
      wait "$perf_pid" || true
      {
        echo "# perf record -F 1999 -p <ak-outpost> during wrk -t1 -c64 -d6s ($name); by DSO, then by symbol"
        perf report -i "$WORK/perf-$name.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]'
        perf report -i "$WORK/perf-$name.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
          | grep -E '^ +[0-9]' | head -150
      } >"$OUT/perf-$name.txt" || log "perf report failed for $name"
    }
    profile b_cookie_cached "${H_COMMON[@]}" -H "Cookie: $COOKIE"
    profile c_no_cookie "${H_COMMON[@]}"
  else
    log "PERF=1 but perf is not installed (apt-get install linux-perf); skipping profiles"
  fi
fi
read -r rss hwm < <(mem_of "$OUTPOST_PID")
echo "outpost_hwm_direct_load,$hwm,KiB,VmHWM after the direct runs b-e (c up to 64)" >>"$MEM_CSV"
echo "outpost_rss_after_direct_load,$rss,KiB,VmRSS after the direct runs" >>"$MEM_CSV"
read -r rss hwm < <(mem_of "$FLOOR_PID")
echo "floor_hwm_direct_load,$hwm,KiB,floor VmHWM after its runs" >>"$MEM_CSV"

# --- 6b. instructions per check (callgrind) --------------------------------------------------
# CALLGRIND_BIN=<path> counts another build (an older commit's, say) with the same session.
rm -f "$OUT/callgrind.csv"
if [[ "${SKIP_CALLGRIND:-0}" != 1 ]]; then
  log "instructions per request under callgrind (b, c, d, and a' for comparison)"
  echo "target,instructions_per_request,requests,binary" >"$OUT/callgrind.csv"
  CG_PORT="$(free_port)"
  outpost_yaml "$CG_PORT" 60s >"$WORK/outpost-cg.yaml"
  WRK_CPU="$WRK_CPU" SERVER_CPU="$SERVER_CPU" bash "$BENCH/callgrind.sh" "${CALLGRIND_BIN:-$OUTPOST_BIN}" \
    "$WORK/outpost-cg.yaml" "$CG_PORT" "$OUT/callgrind.csv" "$APP_HOST" "$ORIGINAL" "$COOKIE" "$ACCESS" \
    "$FLOOR_BIN" "$WORK/b-response.txt" "$(free_port)"
fi

# --- 7. nginx auth_request: outpost vs floor, keepalive and not -------------------------------
# What users run: a browser's page request (bench/browser.sh: Chrome's headers, the session
# cookie among other applications' cookies) through nginx configured as nginx-examples/ ship.
# Behind the same nginx: the floor (5 short headers), the floor answering with the outpost's
# exact response bytes (f′), the outpost, and the outpost with `send_jwt_header: false`.
if [[ "${SKIP_NGINX:-0}" != 1 ]]; then
  # shellcheck source=browser.sh
  source "$BENCH/browser.sh"
  browser_headers "$APP_HOST:$NGINX_PORT" "$COOKIE"
  # The floor answering exactly as the outpost does (b) answered the same browser behind nginx.
  subrequest_headers "$APP_HOST" "http://$APP_HOST:$NGINX_PORT/dashboard/?tab=1" "$COOKIE"
  curl -s -o /dev/null -D "$WORK/n-response.txt" "${SUBREQ_H[@]}" "$OP"
  head -1 "$WORK/n-response.txt" | grep -q ' 200' || die "sub-request check did not answer 200"
  NFLOOR_PORT="$(free_port)"
  taskset -c "$SERVER_CPU" "$FLOOR_BIN" "127.0.0.1:$NFLOOR_PORT" "$WORK/n-response.txt" >/dev/null 2>&1 &
  PIDS+=($!); NFLOOR_PID=$!
  wait_http "http://127.0.0.1:$NFLOOR_PORT/" 200
  NOJWT_PORT="$(free_port)"
  outpost_yaml "$NOJWT_PORT" 60s | sed 's/^  introspection_cache_ttl:/  send_jwt_header: false\n&/' >"$WORK/outpost-nojwt.yaml"
  taskset -c "$SERVER_CPU" "$OUTPOST_BIN" --config "$WORK/outpost-nojwt.yaml" 2>>"$WORK/outpost.log" &
  NOJWT_PID=$!; PIDS+=($!)
  wait_http "http://127.0.0.1:$NOJWT_PORT/outpost.goauthentik.io/ready" 200
  nginx_run() { # example backend-pid backend-port target [app-keepalive]
    local example="$1" bpid="$2" bport="$3" target="$4" dir conf pid
    dir="$WORK/nginx-$example-$target"
    conf="$(python3 "$BENCH/render_nginx.py" "$example" "$dir" "$NGINX_PORT" "127.0.0.1:$bport" "127.0.0.1:$APP_PORT" "$APP_HOST" ${5:-})"
    "$NGINX" -t -p "$dir" -c "$conf" >"$dir/test.log" 2>&1 || { cat "$dir/test.log" >&2; die "nginx -t failed for $example"; }
    taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$conf" >"$dir/stdout.log" 2>&1 &
    pid=$!; PIDS+=($pid)
    CPU_PIDS=("$pid" "$bpid" "$APP_PID")
    local url="http://127.0.0.1:$NGINX_PORT/dashboard/?tab=1"
    wait_http "$url" 200 -H "Host: $APP_HOST:$NGINX_PORT" -H "Cookie: $COOKIE"
    check_and_warm "$target" "$url" 200 "${BROWSER_H[@]}"
    for c in "${CONCURRENCY[@]}"; do
      log "$target c=$c"
      run_wrk "$target" "$example" "$c" "${NGINX_DURATION:-$DURATION}" "$url" "${BROWSER_H[@]}"
    done
    stop_pid "$pid"
  }
  # With keepalive: nginx/app.example.com.conf as shipped (auth upstream keepalive 64), the app
  # also behind a keepalive upstream. Without: SWAG's files as shipped (variable proxy_pass,
  # new connections to the outpost and to the app for every request).
  # Two rounds, the second in reverse order, one run of half the time per point in each;
  # report.py keeps the faster run of a point. So no target gains from its place in the
  # sequence (without keepalive every request leaves two connections in TIME_WAIT, and
  # the machine's other work comes and goes): runs in one fixed sequence had put the floor
  # sending the outpost's bytes at 0.67-0.93x of the plain floor.
  NGINX_TARGETS=(
    "plain $FLOOR_PID $FLOOR_PORT f_nginx_keepalive_floor app-keepalive"
    "plain $NFLOOR_PID $NFLOOR_PORT f_nginx_keepalive_floor_same app-keepalive"
    "plain $OUTPOST_PID $OUTPOST_PORT f_nginx_keepalive_outpost app-keepalive"
    "plain $NOJWT_PID $NOJWT_PORT f_nginx_keepalive_outpost_nojwt app-keepalive"
    "swag $FLOOR_PID $FLOOR_PORT f_nginx_nokeepalive_floor"
    "swag $NFLOOR_PID $NFLOOR_PORT f_nginx_nokeepalive_floor_same"
    "swag $OUTPOST_PID $OUTPOST_PORT f_nginx_nokeepalive_outpost"
    "swag $NOJWT_PID $NOJWT_PORT f_nginx_nokeepalive_outpost_nojwt"
  )
  nginx_point() { # round spec
    local args
    read -r -a args <<<"$2"
    log "nginx round $1: ${args[3]}"
    REPEATS=1 NGINX_DURATION="$HALF" nginx_run "${args[@]}"
  }
  in_two_rounds nginx_point "${NGINX_TARGETS[@]}"
  read -r rss hwm < <(mem_of "$OUTPOST_PID")
  echo "outpost_hwm_all_load,$hwm,KiB,VmHWM after all runs incl. nginx without keepalive" >>"$MEM_CSV"
  echo "outpost_rss_all_load,$rss,KiB,VmRSS after all runs incl. nginx without keepalive" >>"$MEM_CSV"
  stop_pid "$NOJWT_PID"
  stop_pid "$NFLOOR_PID"
fi
stop_pid "$OUTPOST_PID"

# --- 8. memory with many cached sessions -----------------------------------------------------
MEM_PORT="$(free_port)"
start_outpost "$MEM_PORT" 3600s
read -r rss0 hwm < <(mem_of "$OUTPOST_PID")
log "filling the introspection cache with $SESSIONS distinct sessions"
"$TOOL" fill --outpost "127.0.0.1:$MEM_PORT" --host "$APP_HOST" --url "$ORIGINAL" --secret "$SECRET" \
  --client-id "$CLIENT_ID" --tokens "$WORK/tokens.txt" --count "$SESSIONS" --concurrency 32 >"$WORK/fill.json"
log "fill: $(cat "$WORK/fill.json")"
python3 "$BENCH/report.py" check-fill "$WORK/fill.json" "$SESSIONS"
sleep 1
read -r rss hwm < <(mem_of "$OUTPOST_PID")
echo "outpost_rss_sessions_before,$rss0,KiB,fresh outpost before the fill" >>"$MEM_CSV"
echo "outpost_rss_sessions,$rss,KiB,$SESSIONS distinct live sessions checked and cached (cache TTL 1 h)" >>"$MEM_CSV"
echo "outpost_hwm_sessions,$hwm,KiB,VmHWM during the fill" >>"$MEM_CSV"
echo "sessions,$SESSIONS,count,distinct active access tokens in the cache" >>"$MEM_CSV"
stop_pid "$OUTPOST_PID"

# --- 9. start-up time --------------------------------------------------------------------------
START_PORT="$(free_port)"
outpost_yaml "$START_PORT" 60s >"$WORK/startup.yaml"
log "start-up time, $STARTUP_RUNS runs"
"$TOOL" startup --bin "$OUTPOST_BIN" --config "$WORK/startup.yaml" --addr "127.0.0.1:$START_PORT" \
  --runs "$STARTUP_RUNS" >"$WORK/startup.json"
python3 - "$WORK/startup.json" >>"$MEM_CSV" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"startup_median,{s['median_ms']:.2f},ms,exec to first 204 on /ping; {s['runs']} runs; min {s['min_ms']:.2f} p90 {s['p90_ms']:.2f}")
EOF

[[ "${PROXY_BENCH:-0}" == 1 ]] && SKIP_BUILD=1 CARGO_TARGET_DIR="$ROOT/target" RESULTS="$OUT" QUICK="$QUICK" bash "$BENCH/proxy.sh" # proxy mode vs nginx (bench/proxy.sh)

# --- 10. report ------------------------------------------------------------------------------
python3 "$BENCH/report.py" facts "$OUT" # date, load average and commit as the measurements end
python3 "$BENCH/report.py" report "$OUT" "$QUICK" "$DURATION"
if [[ "$QUICK" != 1 && -z "${RESULTS:-}" ]]; then
  python3 "$BENCH/report.py" update-doc "$OUT/summary.md" "$ROOT/BENCHMARKS.md"
fi
log "done: $OUT"
