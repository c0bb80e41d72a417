#!/usr/bin/env bash
# Local demo on loopback: the reference OIDC provider, ak-outpost, nginx with the shipped
# example config, and a small app that shows the identity headers. Ctrl-C stops everything.
#
#   App:   http://app.localhost:8080/   (browsers resolve *.localhost to 127.0.0.1)
#   Users: alice / alice-password (groups admins, users), bob / bob-password (group users)
#
# Ports (override with env): APP_PORT=8080 IDP_PORT=9091 OUTPOST_PORT=9000 ECHO_PORT=8081
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
APP_PORT="${APP_PORT:-8080}"
IDP_PORT="${IDP_PORT:-9091}"
OUTPOST_PORT="${OUTPOST_PORT:-9000}"
ECHO_PORT="${ECHO_PORT:-8081}"
APP_HOST="app.localhost"

bash scripts/install-deps.sh
cargo build --release --locked --bin ak-outpost

RUN="$(mktemp -d /tmp/ak-outpost-demo.XXXXXX)"
chmod 755 "$RUN"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

CLIENT_SECRET="demo-client-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$RUN/idp.json" <<JSON
{
  "port": $IDP_PORT,
  "clients": [{
    "client_id": "ak-outpost-demo",
    "client_secret": "$CLIENT_SECRET",
    "redirect_uris": ["http://$APP_HOST:$APP_PORT/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"],
    "post_logout_redirect_uris": [],
    "token_endpoint_auth_method": "client_secret_post"
  }],
  "users": [
    {"username": "alice", "password": "alice-password", "email": "alice@example.test", "name": "Alice Liddell", "groups": ["admins", "users"]},
    {"username": "bob", "password": "bob-password", "email": "bob@example.test", "name": "Bob Builder", "groups": ["users"]}
  ]
}
JSON
node tests/idp/server.js "$RUN/idp.json" >"$RUN/idp.out" 2>"$RUN/idp.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q IDP_READY "$RUN/idp.out" 2>/dev/null && break; sleep 0.1; done
ISSUER="$(sed -n 's/^IDP_READY //p' "$RUN/idp.out")"
[[ -n "$ISSUER" ]] || { cat "$RUN/idp.log"; echo "IdP did not start"; exit 1; }

node scripts/demo/echo.js "$ECHO_PORT" >"$RUN/echo.log" 2>&1 &
pids+=($!)

cat >"$RUN/outpost.yaml" <<YAML
listen:
  http: "127.0.0.1:$OUTPOST_PORT"
  metrics: ""
secret: "$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
provider:
  issuer: "$ISSUER"
  client_id: ak-outpost-demo
  client_secret: "$CLIENT_SECRET"
  scopes: [openid, profile, email, groups]
  introspection_cache_ttl: 30s
log:
  level: info
  format: text
  requests: true
applications:
  - name: demo
    external_host: "http://$APP_HOST:$APP_PORT"
    mode: forward_single
YAML
./target/release/ak-outpost --config "$RUN/outpost.yaml" &
pids+=($!)

# The shipped nginx example, with the demo's addresses and plain http.
mkdir -p "$RUN/nginx"
sed -e "s/outpost:9000/127.0.0.1:$OUTPOST_PORT/" \
    -e "s#http://app-backend:8080#http://127.0.0.1:$ECHO_PORT#" \
    -e "s/app\.example\.com/$APP_HOST/g" \
    -e "s/^\(\s*\)listen 443 ssl;/\1listen 127.0.0.1:$APP_PORT;/" \
    -e "/listen \[::\]:443 ssl;/d" -e "/^\s*ssl_/d" \
    nginx-examples/nginx/app.example.com.conf >"$RUN/nginx/site.conf"
cat >"$RUN/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log;
events {}
http {
  access_log $RUN/nginx/access.log;
  client_body_temp_path $RUN/nginx/body;
  proxy_temp_path $RUN/nginx/proxy;
  fastcgi_temp_path $RUN/nginx/fastcgi;
  uwsgi_temp_path $RUN/nginx/uwsgi;
  scgi_temp_path $RUN/nginx/scgi;
  include $RUN/nginx/site.conf;
}
CONF
/usr/sbin/nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" &
pids+=($!)
sleep 1

cat <<MSG

  ak-outpost demo is running.

    Open:   http://$APP_HOST:$APP_PORT/
    Users:  alice / alice-password   (groups: admins, users)
            bob   / bob-password     (groups: users)
    IdP:    $ISSUER
    Sign out: http://$APP_HOST:$APP_PORT/outpost.goauthentik.io/sign_out

  Press Ctrl-C to stop.
MSG
wait
