#!/usr/bin/env bash
# Make sure headless Chromium is there for the browser tests (tests/test_magics_browser.py).
#
# Idempotent; when /usr/bin/chromium exists it only checks that it starts and returns.
#   chromium missing -> apt-get update + apt-get install chromium (Debian's package; nothing
#                       downloads a browser build of its own, Playwright drives this one)
#
# Needs root to install (not for the fast path). The Python side (playwright, jupyterlab) comes
# with the project's dev extra.
#
# Environment (optional):
#   BATCAT_CHROMIUM   the browser to check (default /usr/bin/chromium)
set -euo pipefail

CHROMIUM=${BATCAT_CHROMIUM:-/usr/bin/chromium}
T0=$(date +%s.%N)
CREATED_POLICY_RC=0

log() { printf '[provision_browser] %s\n' "$*"; }
die() { printf '[provision_browser] ERROR: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
cleanup() { [ "$CREATED_POLICY_RC" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT

# Serialise concurrent runs: two apt-get installs at once would fight over dpkg's lock.
if mkdir -p /run/lock 2>/dev/null && { exec 9>>/run/lock/batcat-provision-browser.lock; } 2>/dev/null; then
    flock -w 600 9 || die "another provision_browser.sh holds the lock"
fi

if [ ! -x "$CHROMIUM" ]; then
    [ "$CHROMIUM" = /usr/bin/chromium ] || die "$CHROMIUM does not exist (BATCAT_CHROMIUM)"
    [ "$(id -u)" = 0 ] || die "chromium is missing and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || die "chromium is missing and this is not a Debian system"
    t=$(date +%s.%N)
    log "installing chromium ..."
    apt-get update -qq || die "apt-get update failed"
    # Keep maintainer scripts from starting services.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
        || die "apt-get install chromium failed"
    log "installed chromium in $(since "$t") s"
    [ -x "$CHROMIUM" ] || die "chromium installed but $CHROMIUM is missing"
fi

# Debian's wrapper script prints a harmless shell warning on some machines: keep only the version.
version=$("$CHROMIUM" --version 2>/dev/null | grep -i chromium || true)
[ -n "$version" ] || die "$CHROMIUM does not start (try: $CHROMIUM --headless --no-sandbox --version)"
log "$version ready ($(since "$T0") s)"
