#!/usr/bin/env bash
# Make sure a container registry (Debian's docker-registry, i.e. distribution v2) answers on
# 127.0.0.1:5000 for push/pull tests. Idempotent; fast when it already answers.
#
#   - docker-registry missing -> apt-get update + apt-get install docker-registry
#   - nothing answering       -> start the binary in the background with our own config
#                                (loopback only, storage under $BATCAT_REGISTRY_DIR, deletes on)
# Docker treats 127.0.0.0/8 registries as insecure (plain HTTP) by default, so
# `docker push 127.0.0.1:5000/name:tag` works without daemon configuration.
#
# Environment (optional):
#   BATCAT_REGISTRY_ADDR   listen address     (default 127.0.0.1:5000; keep it on loopback)
#   BATCAT_REGISTRY_DIR    config + storage   (default /var/lib/batcat-registry)
#   BATCAT_REGISTRY_LOG    log file           (default /var/log/batcat-registry.log)
set -euo pipefail

ADDR=${BATCAT_REGISTRY_ADDR:-127.0.0.1:5000}
DIR=${BATCAT_REGISTRY_DIR:-/var/lib/batcat-registry}
LOG=${BATCAT_REGISTRY_LOG:-/var/log/batcat-registry.log}
URL="http://$ADDR/v2/"
T0=$(date +%s.%N)
CREATED_POLICY_RC=0

log() { printf '[provision_registry] %s\n' "$*"; }
die() { printf '[provision_registry] ERROR: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

case "$ADDR" in
    127.*:*|localhost:*|\[::1\]:*) ;;
    *) die "BATCAT_REGISTRY_ADDR=$ADDR is not a loopback address" ;;
esac

# A distribution registry answers GET /v2/ with 200 and the header
# Docker-Distribution-Api-Version: registry/2.0.
answers() {
    curl -fsS -m 2 -o /dev/null -D - "$URL" 2>/dev/null | grep -qi '^docker-distribution-api-version: *registry/2'
}

if mkdir -p /run/lock 2>/dev/null && { exec 9>>/run/lock/batcat-provision-registry.lock; } 2>/dev/null; then
    flock -w 60 9 || die "another provision_registry.sh holds the lock"
fi

if answers; then
    log "registry already answering at $URL ($(since "$T0") s)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "no registry at $URL and starting one needs root"

REGISTRY_BIN=$(command -v docker-registry || true)
if [ -z "$REGISTRY_BIN" ]; then
    t=$(date +%s.%N)
    log "installing docker-registry ..."
    apt-get update -qq || die "apt-get update failed"
    # The package's own service would listen on all interfaces with its config: keep it stopped.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=1
    fi
    out=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry > "$out" 2>&1; then
        tail -n 20 "$out" >&2; rm -f "$out"
        die "apt-get install docker-registry failed"
    fi
    rm -f "$out"
    REGISTRY_BIN=$(command -v docker-registry) || die "docker-registry installed but not on PATH"
    log "installed docker-registry in $(since "$t") s"
fi

port=${ADDR##*:}
if curl -s -m 2 -o /dev/null "http://$ADDR/" 2>/dev/null; then
    die "something on $ADDR answers HTTP but is not a registry; free port $port or set BATCAT_REGISTRY_ADDR"
fi

mkdir -p "$DIR/data" "$(dirname "$LOG")"
cat > "$DIR/config.yml" <<EOF
# Written by scripts/provision_registry.sh: local test registry, loopback only, no auth.
version: 0.1
log:
  level: info
  fields:
    service: batcat-registry
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF

run_as=()
if id -u docker-registry >/dev/null 2>&1; then
    chown -R docker-registry: "$DIR/data"
    # setpriv execs in place (no extra parent process), so $! is the registry itself.
    run_as=(setpriv --reuid=docker-registry --regid=docker-registry --init-groups)
fi
printf '\n=== %s provision_registry.sh: %s serve %s\n' "$(date -Is)" "$REGISTRY_BIN" "$DIR/config.yml" >> "$LOG"
setsid nohup "${run_as[@]}" "$REGISTRY_BIN" serve "$DIR/config.yml" >> "$LOG" 2>&1 < /dev/null 9>&- &
pid=$!
echo "$pid" > "$DIR/registry.pid"
log "started $REGISTRY_BIN (pid $pid, config $DIR/config.yml, log $LOG)"

for _ in $(seq 1 80); do
    if answers; then
        log "registry answering at $URL after $(since "$T0") s"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
done
echo "---- last lines of $LOG ----" >&2; tail -n 20 "$LOG" >&2 || true
die "registry did not answer at $URL"
