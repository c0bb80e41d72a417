# Shared by the bench scripts (run.sh, proxy.sh, soak.sh, symbol-order.sh); sourced after TAG
# is set:
#
#     TAG=bench; source "$BENCH/lib.sh"
#
# Defines log/die (prefixed with TAG), a work dir WORK (/tmp/ak-$TAG.XXXXXX, removed at exit
# unless KEEP_WORK=1), PIDS (processes to stop at exit: TERM, then KILL after 5 s),
# free_port, wait_http, build_binaries, start_idp, outpost_yaml_head and outpost_yaml_app.

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

# build_binaries: the release binaries as the Dockerfile builds them (static glibc, --target
# <host>, no strip) into ${CARGO_TARGET_DIR:-target}/packaging, unless SKIP_BUILD=1; sets
# OUTPOST_BIN (unless already set), FLOOR_BIN and TOOL.
build_binaries() {
  local triple pkg
  triple="$(rustc -vV | sed -n 's/^host: //p')"
  pkg="${CARGO_TARGET_DIR:-$ROOT/target}/packaging"
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries (static, as shipped) into $pkg"
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet --locked \
      --bin ak-outpost --target "$triple" --target-dir "$pkg")
    (cd "$ROOT/bench" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet \
      --target "$triple" --target-dir "$pkg")
  fi
  OUTPOST_BIN="${OUTPOST_BIN:-$pkg/$triple/release/ak-outpost}"
  FLOOR_BIN="$pkg/$triple/release/floor"
  TOOL="$pkg/$triple/release/bench-tool"
  local b
  for b in "$OUTPOST_BIN" "$FLOOR_BIN" "$TOOL"; do [[ -x "$b" ]] || die "$b is missing"; done
}

# start_idp <access token TTL, s> <taskset cpu or ""> <external URL>...: the reference IdP
# (tests/idp/server.js) in the background with the bench's client (CLIENT_ID / CLIENT_SECRET,
# a callback on each external URL) and user alice; sets ISSUER.
start_idp() {
  local ttl="$1" cpu="$2" uris="" u pin=()
  shift 2
  for u in "$@"; do
    uris+="${uris:+, }\"$u/outpost.goauthentik.io/callback?X-authentik-auth-callback=true\""
  done
  cat >"$WORK/idp.json" <<JSON
{"port": 0, "access_token_ttl": $ttl,
 "clients": [{"client_id": "$CLIENT_ID", "client_secret": "$CLIENT_SECRET",
   "redirect_uris": [$uris],
   "id_token_signed_response_alg": "RS256", "token_endpoint_auth_method": "client_secret_post"}],
 "users": [{"username": "alice", "password": "alice-password", "email": "alice@example.test",
   "name": "Alice Liddell", "groups": ["admins", "users"]}]}
JSON
  [[ -n "$cpu" ]] && pin=(taskset -c "$cpu")
  "${pin[@]}" node "$ROOT/tests/idp/server.js" "$WORK/idp.json" >"$WORK/idp.out" 2>"$WORK/idp.err" &
  PIDS+=($!)
  for _ in $(seq 200); do grep -q '^IDP_READY ' "$WORK/idp.out" 2>/dev/null && break; sleep 0.1; done
  ISSUER="$(sed -n 's/^IDP_READY //p' "$WORK/idp.out")"
  [[ -n "$ISSUER" ]] || { cat "$WORK/idp.err" >&2; die "IdP did not start"; }
}

# outpost_yaml_head <http address> <metrics address or ""> <introspection cache TTL> [log
# level]: the head every bench configuration shares (listeners, SECRET, the reference IdP at
# ISSUER as provider with CLIENT_ID / CLIENT_SECRET, JSON logs); the caller appends the rest.
outpost_yaml_head() {
  cat <<YAML
listen:
  http: "$1"
  metrics: "$2"
outpost_name: ak-outpost
secret: "$SECRET"
provider:
  issuer: "$ISSUER"
  client_id: "$CLIENT_ID"
  client_secret: "$CLIENT_SECRET"
  scopes: [openid, profile, email, groups]
  introspection_cache_ttl: $3
log:
  level: ${4:-info}
  format: json
YAML
}

# outpost_yaml_app <http address> <introspection cache TTL> <external URL> [log level]: the
# head and one forward-auth application (`app`, single mode) at the external URL.
outpost_yaml_app() {
  outpost_yaml_head "$1" "" "$2" "${4:-}"
  cat <<YAML
applications:
  - name: app
    external_host: "$3"
    mode: forward_single
YAML
}
