#!/usr/bin/env bash
# Installs what the ak-outpost test suite and demo need on Debian 12:
#   - nginx (+ set-misc/ndk modules for SWAG-style configs), caddy, curl,
#     ca-certificates: only the missing ones, apt-get update only if needed
#   - the reference OIDC provider's npm packages (tests/idp), via npm ci,
#     only when node_modules is missing or older than package-lock.json
# Idempotent: a second run does nothing heavy. Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IDP_DIR="$ROOT/tests/idp"

log() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "run as root (or install sudo)"
  SUDO=(sudo)
fi

# --- Debian packages ---------------------------------------------------------

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

have_cmd() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" ]]
}

nginx_module_present() { # $1 = package name, $2 = module file
  pkg_installed "$1" || [[ -e "/usr/lib/nginx/modules/$2" ]]
}

missing=()
have_cmd nginx || pkg_installed nginx || missing+=(nginx)
nginx_module_present libnginx-mod-http-ndk ndk_http_module.so || missing+=(libnginx-mod-http-ndk)
nginx_module_present libnginx-mod-http-set-misc ngx_http_set_misc_module.so || missing+=(libnginx-mod-http-set-misc)
have_cmd caddy || pkg_installed caddy || missing+=(caddy)
have_cmd curl || pkg_installed curl || missing+=(curl)
have_cmd haproxy || pkg_installed haproxy || missing+=(haproxy)
pkg_installed ca-certificates || missing+=(ca-certificates)

# Stop a service the package may have started, without touching any nginx or
# caddy that tests run with their own config (other sessions may be using
# them): only the default-config instances are targeted.
stop_package_services() {
  local pid cmd
  if [[ -r /run/nginx.pid ]]; then
    pid="$(tr -dc '0-9' </run/nginx.pid)"
    if [[ -n "$pid" && -r "/proc/$pid/cmdline" ]]; then
      cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
      if [[ "$cmd" == *nginx* && "$cmd" != *" -c "* && "$cmd" != *" -p "* ]]; then
        log "stopping nginx started by the package (pid $pid)"
        "${SUDO[@]}" kill "$pid" 2>/dev/null || true
      fi
    fi
  fi
  "${SUDO[@]}" pkill -f '^/usr/bin/caddy run --environ --config /etc/caddy/Caddyfile' 2>/dev/null || true
}

if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # keep maintainer scripts from starting services, unless a policy exists
  policy_created=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  cleanup_policy() {
    if ((policy_created)); then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
  }
  trap cleanup_policy EXIT
  apt_opts=(-o DPkg::Lock::Timeout=600)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
  cleanup_policy
  trap - EXIT
  stop_package_services
  log "Debian packages installed"
else
  log "Debian packages: all present"
fi

# --- test IdP (node) ---------------------------------------------------------

command -v node >/dev/null 2>&1 || die "node (>= 20.19) is required for tests/idp"
command -v npm >/dev/null 2>&1 || die "npm is required for tests/idp"
node -e '
  const [maj, min] = process.versions.node.split(".").map(Number);
  process.exit(maj > 20 || (maj === 20 && min >= 19) ? 0 : 1);
' || die "node $(node --version) is too old for tests/idp (needs >= 20.19)"

# stamp = checksum of the lock file npm ci last installed from (covers lock
# changes within the file system's mtime granularity)
STAMP="$IDP_DIR/node_modules/.install-deps.sha256"
lock_sum="$(sha256sum "$IDP_DIR/package-lock.json" | cut -d' ' -f1)"
if [[ ! -d "$IDP_DIR/node_modules" \
      || "$IDP_DIR/package-lock.json" -nt "$IDP_DIR/node_modules" \
      || "$(cat "$STAMP" 2>/dev/null || true)" != "$lock_sum" ]]; then
  log "installing tests/idp npm packages (npm ci)"
  (cd "$IDP_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$lock_sum" >"$STAMP"
  touch "$IDP_DIR/node_modules"
  log "tests/idp npm packages installed"
else
  log "tests/idp npm packages: up to date"
fi

log "done"

# --- compose schema validator (tests/schema, used by tests/packaging.rs) ------
SCHEMA_DIR="$ROOT/tests/schema"
if [[ ! -d "$SCHEMA_DIR/node_modules/ajv" || "$SCHEMA_DIR/package-lock.json" -nt "$SCHEMA_DIR/node_modules" ]]; then
  log "installing tests/schema npm packages (npm ci)"
  (cd "$SCHEMA_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$SCHEMA_DIR/node_modules"
else
  log "tests/schema npm packages: up to date"
fi
