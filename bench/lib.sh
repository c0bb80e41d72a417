# Shared by the bench scripts (run.sh, proxy.sh, soak.sh); sourced after TAG is set:
#
#     TAG=bench; source "$BENCH/lib.sh"
#
# Defines log/die (prefixed with TAG), a work dir WORK (/tmp/ak-$TAG.XXXXXX, removed at exit
# unless KEEP_WORK=1), PIDS (processes to stop at exit: TERM, then KILL after 5 s),
# free_port and wait_http.

log() { printf '[%s %3ds] %s\n' "$TAG" "$SECONDS" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$TAG" "$*" >&2; exit 1; }

WORK="$(mktemp -d "/tmp/ak-$TAG.XXXXXX")"
chmod 755 "$WORK" # nginx workers run as nobody
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url expected-status [extra curl args...]
  local url="$1" want="$2"; shift 2
  for _ in $(seq 200); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null)" == "$want" ]] && return 0
    sleep 0.05
  done
  die "$url never answered $want"
}
