#!/usr/bin/env bash
# Many short rounds behind nginx with keepalive, for ratios whose spread can be seen:
#
#     bash bench/rounds.sh            # ROUNDS=6 (even), DURATION=5 (s per run), CS="16 64"
#
# run.sh measures each nginx point in two rounds and keeps the faster run; on this 2-core VM
# two runs of one target differ by a few per cent, as much as the gap this measures. Here the
# floor (200 + 5 short headers), the floor sending the outpost's exact answer (f′), the
# outpost and the outpost with `send_jwt_header: false` answer a browser's page request
# through nginx configured as
# nginx-examples/app.example.com.conf ships (auth and app upstreams with keepalive), in
# ROUNDS rounds, every other one in reverse order, with each process's CPU time per request
# (nginx, the auth server, the app; from /proc/<pid>/task/*/schedstat). Writes
# $RESULTS/rounds.csv (one row per run) and $RESULTS/rounds.md (the median of each round's
# ratio, its range, and the median CPU per request) and prints the latter.
#
# Like run.sh: wrk on one core, everything else pinned to the other; RESULTS (default
# bench/results), SKIP_BUILD=1 to reuse the binaries in target/packaging.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
APP_HOST=app.bench.test
CLIENT_ID=ak-outpost-bench
CLIENT_SECRET=bench-client-secret-0123456789abcdef-0123456789
SECRET=bench-sealing-secret-0123456789abcdef-0123456789abcdef
TAG=rounds
# shellcheck source=lib.sh
source "$BENCH/lib.sh"
ROUNDS="${ROUNDS:-6}" DURATION="${DURATION:-5}" CS=(${CS:-16 64})
RESULTS="${RESULTS:-$BENCH/results}"
WRK_CPU=0 SERVER_CPU=1
NGINX="${NGINX:-/usr/sbin/nginx}"
for tool in wrk "$NGINX" node curl taskset; do command -v "$tool" >/dev/null || die "$tool is missing"; done
mkdir -p "$RESULTS"
build_binaries

NGINX_PORT="$(free_port)"
EXTERNAL="http://$APP_HOST:$NGINX_PORT"
URL="$EXTERNAL/dashboard/?tab=1"
LOCAL_URL="http://127.0.0.1:$NGINX_PORT/dashboard/?tab=1"
start_idp 3600 "$SERVER_CPU" "$EXTERNAL"

start_floor() { # port [response file] -> FLOOR_STARTED
  taskset -c "$SERVER_CPU" "$FLOOR_BIN" "127.0.0.1:$1" ${2:+"$2"} >/dev/null 2>&1 &
  FLOOR_STARTED=$!; PIDS+=($!)
  wait_http "http://127.0.0.1:$1/" 200
}
APP_PORT="$(free_port)"; start_floor "$APP_PORT"; APP_PID=$FLOOR_STARTED
OUTPOST_PORT="$(free_port)"
outpost_yaml_app "127.0.0.1:$OUTPOST_PORT" 60s "$EXTERNAL" >"$WORK/outpost.yaml"
taskset -c "$SERVER_CPU" "$OUTPOST_BIN" --config "$WORK/outpost.yaml" 2>"$WORK/outpost.log" &
OUTPOST_PID=$!; PIDS+=($!)
wait_http "http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/ready" 200
NOJWT_PORT="$(free_port)"
sed -e "s/127.0.0.1:$OUTPOST_PORT/127.0.0.1:$NOJWT_PORT/" \
  -e 's/^  introspection_cache_ttl:/  send_jwt_header: false\n&/' "$WORK/outpost.yaml" >"$WORK/nojwt.yaml"
taskset -c "$SERVER_CPU" "$OUTPOST_BIN" --config "$WORK/nojwt.yaml" 2>>"$WORK/outpost.log" &
NOJWT_PID=$!; PIDS+=($!)
wait_http "http://127.0.0.1:$NOJWT_PORT/outpost.goauthentik.io/ready" 200
"$TOOL" login --outpost "127.0.0.1:$OUTPOST_PORT" --host "$APP_HOST" --user alice \
  --password alice-password --secret "$SECRET" --client-id "$CLIENT_ID" >"$WORK/login.json"
COOKIE="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cookie"])' "$WORK/login.json")"
# shellcheck source=browser.sh
source "$BENCH/browser.sh"
browser_headers "$APP_HOST:$NGINX_PORT" "$COOKIE"
subrequest_headers "$APP_HOST" "$URL" "$COOKIE"
curl -s -o /dev/null -D "$WORK/n-response.txt" "${SUBREQ_H[@]}" \
  "http://127.0.0.1:$OUTPOST_PORT/outpost.goauthentik.io/auth/nginx"
head -1 "$WORK/n-response.txt" | grep -q ' 200' || die "the sub-request did not answer 200"
FLOOR_PORT="$(free_port)"; start_floor "$FLOOR_PORT"; FLOOR_PID=$FLOOR_STARTED
SAME_PORT="$(free_port)"; start_floor "$SAME_PORT" "$WORK/n-response.txt"; SAME_PID=$FLOOR_STARTED

cpu_ns() { # pid... -> CPU time (ns) of each, with its child processes
  local p q t out=()
  for p in "$@"; do
    t=0
    for q in "$p" $(pgrep -P "$p" || true); do
      t=$((t + $(cat /proc/"$q"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}')))
    done
    out+=("$t")
  done
  echo "${out[@]}"
}

CSV="$RESULTS/rounds.csv"
echo "round,concurrency,target,requests,rps,nginx_ns,auth_ns,app_ns" >"$CSV"
TARGETS=("floor $FLOOR_PID $FLOOR_PORT" "floor_same $SAME_PID $SAME_PORT"
  "outpost $OUTPOST_PID $OUTPOST_PORT" "outpost_nojwt $NOJWT_PID $NOJWT_PORT")
for round in $(seq 1 "$ROUNDS"); do
  order=("${TARGETS[@]}")
  ((round % 2 == 0)) && order=("${TARGETS[3]}" "${TARGETS[2]}" "${TARGETS[1]}" "${TARGETS[0]}")
  for c in "${CS[@]}"; do
    for t in "${order[@]}"; do
      read -r name bpid bport <<<"$t"
      dir="$WORK/nginx-$name-$round-$c"
      conf="$(python3 "$BENCH/render_nginx.py" plain "$dir" "$NGINX_PORT" "127.0.0.1:$bport" \
        "127.0.0.1:$APP_PORT" "$APP_HOST" app-keepalive)"
      taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$conf" >/dev/null 2>&1 &
      npid=$!
      wait_http "$LOCAL_URL" 200 -H "Host: $APP_HOST:$NGINX_PORT" -H "Cookie: $COOKIE"
      taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d2s "${BROWSER_H[@]}" "$LOCAL_URL" >/dev/null
      read -r n0 b0 a0 <<<"$(cpu_ns "$npid" "$bpid" "$APP_PID")"
      out="$(taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d"${DURATION}s" "${BROWSER_H[@]}" "$LOCAL_URL")"
      read -r n1 b1 a1 <<<"$(cpu_ns "$npid" "$bpid" "$APP_PID")"
      kill "$npid"; wait "$npid" 2>/dev/null || true
      req="$(awk '/requests in/ {print $1}' <<<"$out")"
      rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
      grep -q 'Non-2xx' <<<"$out" && die "$name c=$c: answers other than 2xx: $out"
      echo "$round,$c,$name,$req,$rps,$((n1 - n0)),$((b1 - b0)),$((a1 - a0))" >>"$CSV"
      log "round $round c=$c $name: $rps req/s"
    done
  done
done

python3 - "$CSV" "$ROUNDS" "$DURATION" >"$RESULTS/rounds.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
runs = {(r["target"], int(r["concurrency"]), int(r["round"])): r for r in rows}
cs = sorted({int(r["concurrency"]) for r in rows})
rounds = sorted({int(r["round"]) for r in rows})
print(f"Behind nginx with keepalive, {sys.argv[2]} rounds of {sys.argv[3]} s runs (every other "
      "round in reverse order). Ratio: requests per second, each round's pair; median [range].\n")
print("| c | outpost ÷ floor | f′ ÷ floor | outpost ÷ f′ | outpost, no JWT ÷ floor |")
print("|---:|---|---|---|---|")
for c in cs:
    cells = []
    for a, b in (("outpost", "floor"), ("floor_same", "floor"), ("outpost", "floor_same"),
                 ("outpost_nojwt", "floor")):
        q = [float(runs[(a, c, n)]["rps"]) / float(runs[(b, c, n)]["rps"]) for n in rounds]
        cells.append(f"{statistics.median(q):.3f} [{min(q):.3f}–{max(q):.3f}]")
    print(f"| {c} | " + " | ".join(cells) + " |")
print("\nCPU per request, µs (median of the rounds): nginx / auth server / app = total.\n")
print("| c | floor | f′ (floor, outpost's bytes) | outpost | outpost, no JWT |")
print("|---:|---|---|---|---|")
for c in cs:
    cells = []
    for t in ("floor", "floor_same", "outpost", "outpost_nojwt"):
        per = [[int(runs[(t, c, n)][k]) / int(runs[(t, c, n)]["requests"]) / 1000
                for n in rounds] for k in ("nginx_ns", "auth_ns", "app_ns")]
        m = [statistics.median(x) for x in per]
        cells.append(f"{m[0]:.1f} / {m[1]:.1f} / {m[2]:.1f} = {sum(m):.1f}")
    print(f"| {c} | " + " | ".join(cells) + " |")
PY
cat "$RESULTS/rounds.md"
