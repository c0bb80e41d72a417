#!/usr/bin/env bash
# Writes build/symbol-order.txt: the functions a running outpost executes after start-up, the
# most executed first. build.rs hands the file to the linker (lld's --symbol-ordering-file),
# which then lays these functions out next to each other at the start of .text.
#
#     bash bench/symbol-order.sh          # ~3 min: build, then one run under callgrind
#
# Why: the kernel maps a binary's code into a process in 64 KiB chunks around each page the
# process runs. Laid out by the compiler, the ≈ 0.9 MB of code that serving and logging in run
# is spread over ≈ 4 MiB of the 5.8 MB of .text, and all of it counts in RSS; laid out in one
# run, ≈ 1.4 MiB does. Nothing else changes: the same functions, the same code.
#
# The workload, after start-up (the counters are zeroed once /ready answers): per round, a
# full login (/start, the reference IdP's form, /callback) for a forward-auth application and
# for a proxy-mode application; checks on /auth/nginx, /auth/traefik, /auth/caddy and
# /auth/envoy with nginx's browser-shaped sub-request (bench/browser.sh), with the session,
# without a cookie and with a broken one; Bearer header auth; proxied requests to the backend
# with and without the session; /sign_out and a check with the signed-out cookie; /ping,
# /ready and a /metrics scrape.
#
# Regenerate after a change of the toolchain, of Cargo.lock or of much of the code: names
# that no longer exist are skipped by the linker, so a stale file only loses some of the
# effect (bench/run.sh reports how many of its names the shipped binary still has).
# Environment: SKIP_BUILD=1 (use the binaries already built), ROUNDS=3, KEEP_WORK=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
ORDER="$ROOT/build/symbol-order.txt"
ROUNDS="${ROUNDS:-3}"
APP_HOST=app.bench.test
PROXY_HOST=proxied.bench.test
CLIENT_ID=ak-outpost-bench
CLIENT_SECRET=bench-client-secret-0123456789abcdef-0123456789
SECRET=bench-sealing-secret-0123456789abcdef-0123456789abcdef

TAG=symbol-order
source "$BENCH/lib.sh"
source "$BENCH/browser.sh"

bash "$ROOT/scripts/install-deps.sh" >&2
if ! command -v valgrind >/dev/null 2>&1; then
  log "installing valgrind (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq valgrind >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq valgrind >/dev/null; }
fi
for c in node python3 curl valgrind callgrind_control nm; do
  command -v "$c" >/dev/null 2>&1 || die "$c is missing"
done

# --- build, as bench/run.sh does (static glibc, --target <host>) ------------------------------
# The names in the file do not depend on the layout, so the binary built with the current
# file gives the names for the next one.
build_binaries

# --- the IdP, a backend, the outpost under callgrind ------------------------------------------
start_idp 3600 "" "http://$APP_HOST" "http://$PROXY_HOST"
BACKEND_PORT="$(free_port)"
"$FLOOR_BIN" "127.0.0.1:$BACKEND_PORT" >/dev/null 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/" 200

PORT="$(free_port)" METRICS_PORT="$(free_port)"
{
  outpost_yaml_head "127.0.0.1:$PORT" "127.0.0.1:$METRICS_PORT" 60s
  cat <<YAML
applications:
  - name: app
    external_host: "http://$APP_HOST"
    mode: forward_single
  - name: proxied
    external_host: "http://$PROXY_HOST"
    mode: proxy
    upstream: "http://127.0.0.1:$BACKEND_PORT"
YAML
} >"$WORK/outpost.yaml"
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/cg.out" \
  "$OUTPOST_BIN" --config "$WORK/outpost.yaml" >"$WORK/outpost.out" 2>"$WORK/outpost.log" &
VG=$!; PIDS+=($!)
for _ in $(seq 600); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/outpost.goauthentik.io/ready")" == 200 ]] && break
  kill -0 "$VG" 2>/dev/null || { cat "$WORK/outpost.log" >&2; die "the outpost exited"; }
  sleep 0.1
done
sleep 1
callgrind_control -z "$VG" >/dev/null
log "outpost ready under callgrind; counters zeroed; $ROUNDS rounds of the workload"

# --- the workload -----------------------------------------------------------------------------
OUT=http://127.0.0.1:$PORT/outpost.goauthentik.io
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
expect() { # status curl-args... : one request, its status checked
  local want="$1" got; shift
  got="$(curl -s -o /dev/null -w '%{http_code}' "$@")"
  [[ "$got" == "$want" ]] || die "expected $want, got $got: $*"
}
login() { # host -> cookie in $WORK/login-<host>.json
  "$TOOL" login --outpost "127.0.0.1:$PORT" --host "$1" --user alice --password alice-password \
    --secret "$SECRET" --client-id "$CLIENT_ID" >"$WORK/login-$1.json"
}
for ((round = 1; round <= ROUNDS; round++)); do
  login "$APP_HOST"
  cookie="$(json "$WORK/login-$APP_HOST.json" cookie)"
  access="$(json "$WORK/login-$APP_HOST.json" access_token)"
  original="http://$APP_HOST/dashboard/?tab=1"
  subrequest_headers "$APP_HOST" "$original" "$cookie"
  traefik=(-H "X-Forwarded-Host: $APP_HOST" -H "X-Forwarded-Proto: http" -H "X-Forwarded-Uri: /dashboard/?tab=1"
    -H "X-Forwarded-Method: GET" -H "Cookie: $cookie")
  for _ in 1 2 3; do
    expect 200 "${SUBREQ_H[@]}" "$OUT/auth/nginx"
    expect 200 -H "Host: $APP_HOST" "${traefik[@]}" "$OUT/auth/traefik"
    expect 200 -H "Host: $APP_HOST" "${traefik[@]}" "$OUT/auth/caddy"
    expect 200 -H "Host: $APP_HOST" -H "Cookie: $cookie" "http://127.0.0.1:$PORT/outpost.goauthentik.io/auth/envoy/dashboard/?tab=1"
    expect 200 -H "Host: $APP_HOST" -H "X-Original-URL: $original" -H "Authorization: Bearer $access" "$OUT/auth/nginx"
    expect 401 -H "Host: $APP_HOST" -H "X-Original-URL: $original" "$OUT/auth/nginx"
    expect 401 -H "Host: $APP_HOST" -H "X-Original-URL: $original" -H "Cookie: ${cookie%?????}AAAAA" "$OUT/auth/nginx"
    expect 302 -H "Host: $APP_HOST" -H "X-Forwarded-Host: $APP_HOST" -H "X-Forwarded-Proto: http" -H "X-Forwarded-Uri: /" "$OUT/auth/traefik"
  done
  login "$PROXY_HOST"
  pcookie="$(json "$WORK/login-$PROXY_HOST.json" cookie)"
  browser_headers "$PROXY_HOST" "$pcookie"
  expect 200 "${BROWSER_H[@]}" "http://127.0.0.1:$PORT/dashboard/?tab=1"
  expect 200 "${BROWSER_H[@]}" -X POST --data 'a=1&b=2' "http://127.0.0.1:$PORT/api/save"
  expect 302 -H "Host: $PROXY_HOST" "http://127.0.0.1:$PORT/dashboard/"
  expect 204 "$OUT/ping"
  expect 200 "$OUT/ready"
  expect 200 "http://127.0.0.1:$METRICS_PORT/metrics"
  expect 302 -H "Host: $APP_HOST" -H "Cookie: $cookie" "$OUT/sign_out"
  expect 401 -H "Host: $APP_HOST" -H "X-Original-URL: $original" -H "Cookie: $cookie" "$OUT/auth/nginx"
done
callgrind_control -d "$VG" >/dev/null
sleep 1
DUMP="$(ls "$WORK"/cg.out.* | head -1)"
[[ -f "$DUMP" ]] || die "no callgrind dump"

# --- the file ---------------------------------------------------------------------------------
mkdir -p "$(dirname "$ORDER")"
python3 - "$DUMP" "$OUTPOST_BIN" "$ORDER" "$(git -C "$ROOT" rev-parse --short HEAD)" "$(rustc -V)" <<'PY'
import re, subprocess, sys
dump, binary, order, commit, rustc = sys.argv[1:]
# Self cost (instructions) per function of the dump: the cost lines under fn=, not the
# inclusive cost line that follows each calls= line.
names, cost, fn, skip = {}, {}, None, False
for line in open(dump):
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, ident, name = m.groups()
        if name:
            names[ident] = name.split("'")[0]  # callgrind's recursion suffix 'N
        if kind == "fn":
            fn = ident
        continue
    if line.startswith("calls="):
        skip = True
        continue
    if fn and line[:1] in "0123456789+-*":
        if not skip:
            cost[fn] = cost.get(fn, 0) + int(line.split()[-1])
        skip = False
in_binary = set()
for l in subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    p = l.split()
    if len(p) == 3 and p[1] in "tT":
        in_binary.add(p[2])
total = {}
for ident, c in cost.items():
    name = names.get(ident)
    if name in in_binary:
        total[name] = total.get(name, 0) + c
ranked = sorted(total, key=lambda n: (-total[n], n))
with open(order, "w") as f:
    f.write("# Functions of ak-outpost in the order the linker lays them out (build.rs passes this\n"
            "# file to lld as --symbol-ordering-file): those a running outpost executes, the most\n"
            "# executed first. Generated by bench/symbol-order.sh; do not edit by hand.\n"
            f"# From {commit}, {rustc}.\n")
    for n in ranked:
        f.write(n + "\n")
print(f"{len(ranked)} functions written to {order}", file=sys.stderr)
PY
