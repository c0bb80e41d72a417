#!/usr/bin/env bash
# Instructions per check, counted by callgrind: unlike req/s, the count does not move with
# whatever else the machine is doing, so it is the number to compare between builds.
# Called by bench/run.sh (which has the IdP, a session and the config ready):
#
#   callgrind.sh <outpost binary> <config yaml> <port> <csv> <app host> <original url> \
#                <cookie> <access token> [<floor binary> <headers file> <floor port>]
#
# Starts the outpost under `valgrind --tool=callgrind` (listening on <port>, as the config
# says), and for (b) valid cookie, (c) no cookie and (d) Bearer header: a 2 s warm-up with
# wrk (4 connections; the first check of a cookie or token is not what is counted), zeroes
# the counters, runs wrk for 4 s, dumps, and appends
# `target,instructions_per_request,requests,binary` to <csv>. With a floor binary and a headers
# file, (a') the floor answering with those headers (the outpost's (b) response) is counted
# the same way, for (b)'s request: what (b) spends beyond it is the outpost's own work.
# (n) is nginx's auth sub-request for a browser's page request (bench/browser.sh), counted
# on the outpost and, as (n2), on the floor with the same response.
# CALLGRIND_TARGETS=b_cookie_cached,n_nginx_subrequest,... counts only those.
# With CALLGRIND_KEEP=<dir>, each
# target's dump is also kept there as <target>.callgrind (for callgrind_annotate).
set -euo pipefail
BIN="$1" YAML="$2" PORT="$3" CSV="$4" HOST="$5" ORIGINAL="$6" COOKIE="$7" ACCESS="$8"
FLOOR_BIN="${9:-}" FLOOR_HEADERS="${10:-}" FLOOR_PORT="${11:-}"
WRK_CPU="${WRK_CPU:-0}" SERVER_CPU="${SERVER_CPU:-1}"
# Connections of the counted load. With 1, every request is a full event-loop turn whatever
# else the machine does (more connections batch several requests per turn, so the count per
# request then drops a little when the machine is idle): use 1 to compare builds on a busy
# machine.
CONNS="${CALLGRIND_CONNECTIONS:-4}"
DIR="$(mktemp -d /tmp/ak-callgrind.XXXXXX)"
URL="http://127.0.0.1:$PORT/outpost.goauthentik.io/auth/nginx"

VG=""
cleanup() {
  [[ -n "$VG" ]] && { kill -TERM "$VG" 2>/dev/null || true; wait "$VG" 2>/dev/null || true; }
  rm -rf "$DIR"
}
trap cleanup EXIT
start() { # ready-url out-name command... : runs the command under callgrind until ready-url is 200
  local ready="$1" name="$2"; shift 2
  taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$DIR/$name" \
    "$@" >"$DIR/stdout" 2>"$DIR/stderr" &
  VG=$!
  for _ in $(seq 600); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$ready")" == 200 ]] && return 0
    kill -0 "$VG" 2>/dev/null || { cat "$DIR/stderr" >&2; echo "callgrind: $1 exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "callgrind: $* never became ready" >&2; exit 1
}
stop() { kill -TERM "$VG" 2>/dev/null || true; wait "$VG" 2>/dev/null || true; VG=""; }
start "http://127.0.0.1:$PORT/outpost.goauthentik.io/ready" cg.out "$BIN" --config "$YAML"
OUT_NAME=cg.out

H=(-H "Host: $HOST" -H "X-Original-URL: $ORIGINAL" -H "User-Agent: wrk" -H "Accept: text/html")
dumps=0
measure() { # target [wrk -H args...]
  local target="$1"; shift
  taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d2s "${H[@]}" "$@" "$URL" >/dev/null
  callgrind_control -z "$VG" >/dev/null
  local n
  n="$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d4s "${H[@]}" "$@" "$URL" | awk '/requests in/{print $1}')"
  callgrind_control -d "$VG" >/dev/null
  dumps=$((dumps + 1))
  local f="$DIR/$OUT_NAME.$dumps" total=""
  for _ in $(seq 100); do
    total="$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f" 2>/dev/null || true)"
    [[ -n "$total" ]] && break
    sleep 0.1
  done
  [[ -n "$total" && -n "$n" && "$n" -gt 0 ]] || { echo "callgrind: no count for $target" >&2; exit 1; }
  echo "$target,$((total / n)),$n,$(basename "$BIN")" >>"$CSV"
  if [[ -n "${CALLGRIND_KEEP:-}" ]]; then mkdir -p "$CALLGRIND_KEEP"; cp "$f" "$CALLGRIND_KEEP/$target.callgrind"; fi
  echo "[callgrind] $target: $((total / n)) instructions per request ($n requests)" >&2
}
measure_raw() { local H=(); measure "$@"; } # only the given headers
# shellcheck source=browser.sh
source "$(dirname "${BASH_SOURCE[0]}")/browser.sh"
subrequest_headers "$HOST" "$ORIGINAL" "$COOKIE"
wanted() { [[ -z "${CALLGRIND_TARGETS:-}" || ",$CALLGRIND_TARGETS," == *",$1,"* ]]; }
wanted b_cookie_cached && measure b_cookie_cached -H "Cookie: $COOKIE"
wanted c_no_cookie && measure c_no_cookie
wanted d_bearer_hit && measure d_bearer_hit -H "Authorization: Bearer $ACCESS"
# nginx's auth sub-request for a browser's page request (bench/browser.sh): 18 headers,
# 2.5 KB, the session cookie among other applications' cookies.
wanted n_nginx_subrequest && measure_raw n_nginx_subrequest "${SUBREQ_H[@]}"
# The same on a new connection per check, as SWAG's config (no upstream keepalive) sends it.
wanted n_nginx_subrequest_close && measure_raw n_nginx_subrequest_close "${SUBREQ_H[@]}" -H "Connection: close"
stop
if [[ -n "$FLOOR_BIN" ]]; then
  start "http://127.0.0.1:$FLOOR_PORT/" floor.out "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "$FLOOR_HEADERS"
  OUT_NAME=floor.out dumps=0 BIN="$FLOOR_BIN"
  URL="http://127.0.0.1:$FLOOR_PORT/outpost.goauthentik.io/auth/nginx"
  wanted a2_floor_same_response && measure a2_floor_same_response -H "Cookie: $COOKIE"
  wanted n2_floor_nginx_subrequest && measure_raw n2_floor_nginx_subrequest "${SUBREQ_H[@]}"
  wanted n2_floor_nginx_subrequest_close && measure_raw n2_floor_nginx_subrequest_close "${SUBREQ_H[@]}" -H "Connection: close"
  stop
fi
