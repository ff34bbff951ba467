#!/usr/bin/env bash
# Provision a working Docker engine and the local base image batcat-base:bookworm.
#
# Idempotent; when everything already exists it only checks and returns (well under 2 s).
#   1. dockerd missing          -> apt-get update (once) + apt-get install docker.io
#   2. engine not answering     -> start dockerd in the background (log: $BATCAT_DOCKERD_LOG)
#                                  and wait until `docker info` works
#   3. base image missing       -> use python:3.11-slim if it is here or can be pulled (batcat's
#                                  default base); else debootstrap Debian bookworm (minbase +
#                                  python3) from the apt mirror configured on this machine, then
#                                  `docker import` (batcat falls back to that image by itself)
#
# Needs root for steps 1-3 (not for the fast path). Nothing is pulled from any image registry.
#
# Environment (all optional):
#   BATCAT_BASE_IMAGE        image to create             (default batcat-base:bookworm)
#   BATCAT_PULL_BASE         image preferred when it can be pulled (default python:3.11-slim;
#                            empty: never try to pull)
#   BATCAT_BASE_SUITE        Debian suite to bootstrap   (default bookworm)
#   BATCAT_BASE_PACKAGES     extra comma-separated packages for the base image
#   BATCAT_BASE_UPGRADE      1: apply <suite>-updates / <suite>-security in the base (default 1)
#   BATCAT_DEBIAN_MIRROR     mirror URI to use instead of the one read from apt's config
#   BATCAT_DOCKERD_LOG       dockerd log file            (default /var/log/batcat-dockerd.log)
#   BATCAT_DOCKERD_FLAGS     dockerd flags, replacing the defaults below
#   BATCAT_DOCKERD_TIMEOUT   seconds to wait for the engine (default 60)
#   BATCAT_FORCE_BASE        1: rebuild the base image even if it exists
set -euo pipefail

BASE_IMAGE=${BATCAT_BASE_IMAGE:-batcat-base:bookworm}
PULL_BASE=${BATCAT_PULL_BASE-python:3.11-slim}
SUITE=${BATCAT_BASE_SUITE:-bookworm}
DOCKERD_LOG=${BATCAT_DOCKERD_LOG:-/var/log/batcat-dockerd.log}
DOCKERD_TIMEOUT=${BATCAT_DOCKERD_TIMEOUT:-60}
DOCKER_SOCK=/var/run/docker.sock
DOCKER_PIDFILE=/var/run/docker.pid
# No iptables/NAT rules and no ip_forward change on the host: batcat containers that need the
# network use --network host; the default bridge still exists for isolated containers.
DEFAULT_DOCKERD_FLAGS="--iptables=false --ip-masq=false --ip-forward=false"
DOCKERD_FLAGS=${BATCAT_DOCKERD_FLAGS:-$DEFAULT_DOCKERD_FLAGS}
BASE_PACKAGES="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
[ -n "${BATCAT_BASE_PACKAGES:-}" ] && BASE_PACKAGES="$BASE_PACKAGES,$BATCAT_BASE_PACKAGES"

T_START=$(date +%s.%N)
APT_UPDATED=0
CREATED_POLICY_RC=0
ROOTFS=""

log() { printf '[provision_docker] %s\n' "$*"; }
die() { printf '[provision_docker] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
    local rc=$?
    if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ]; then
        # Unmount whatever debootstrap/chroot left mounted (deepest first), then delete the tree
        # without crossing into any mount that could not be removed.
        awk -v r="$ROOTFS" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts \
            | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf --one-file-system "$ROOTFS" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (run this script as root)"; }

apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        local t; t=$(now)
        log "apt-get update ..."
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
        log "apt-get update done in $(since "$t") s"
    fi
}

apt_install() {
    need_root "installing $*"
    apt_update_once
    # Keep maintainer scripts from starting services (docker, containerd, ...) with the
    # distribution's defaults: this script starts dockerd itself, with its own flags.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=1
    fi
    local t; t=$(now)
    log "apt-get install $* ..."
    local out; out=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > "$out" 2>&1; then
        tail -n 20 "$out" >&2; rm -f "$out"
        die "apt-get install $* failed"
    fi
    rm -f "$out"
    log "installed $* in $(since "$t") s"
    if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; CREATED_POLICY_RC=0; fi
}

# Serialise concurrent runs (two test sessions must not start two daemons).
LOCK_FILE=/run/lock/batcat-provision-docker.lock
# (`exec 9>>f 2>/dev/null` would silence the whole script: the group scopes the 2>/dev/null.)
if mkdir -p /run/lock 2>/dev/null && { exec 9>>"$LOCK_FILE"; } 2>/dev/null; then
    flock -w 300 9 || die "another provision_docker.sh holds $LOCK_FILE"
fi

# --------------------------------------------------------------------------- 1. packages
if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is not on PATH"
    INSTALLED_DOCKER=1
else
    INSTALLED_DOCKER=0
fi
DOCKER_BIN=$(command -v docker || true)
[ -n "$DOCKER_BIN" ] || die "no docker client on PATH (install docker.io or docker-ce-cli)"

# Talk to the engine this script manages (the default unix socket), whatever DOCKER_HOST or the
# current docker context say; at the end we check that the plain `docker` reaches it too.
dk() { DOCKER_HOST="unix://$DOCKER_SOCK" DOCKER_CONTEXT='' "$DOCKER_BIN" "$@"; }
engine_up() { dk info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

# --------------------------------------------------------------------------- 2. engine
if engine_up; then
    log "engine already answering on $DOCKER_SOCK"
    STARTED_DOCKERD=0
else
    need_root "starting dockerd"
    t=$(now)
    # A dockerd that is still initialising may not have written its pidfile yet: wait for it
    # instead of starting a second one.
    pid=$(pgrep -x dockerd | head -n 1 || true)
    if [ -n "$pid" ]; then
        log "dockerd (pid $pid) is running but not answering on $DOCKER_SOCK yet; waiting for it"
    elif [ -e "$DOCKER_PIDFILE" ]; then
        log "removing stale $DOCKER_PIDFILE (no dockerd is running)"
        rm -f "$DOCKER_PIDFILE"
    fi
    if [ -z "$pid" ]; then
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        printf '\n=== %s provision_docker.sh: dockerd %s\n' "$(date -Is)" "$DOCKERD_FLAGS" >> "$DOCKERD_LOG"
        # setsid + nohup: the daemon outlives this script and the shell that ran it; 9>&- keeps
        # our lock fd out of the daemon (else it would hold the lock forever).
        # shellcheck disable=SC2086
        setsid nohup dockerd --host "unix://$DOCKER_SOCK" --pidfile "$DOCKER_PIDFILE" $DOCKERD_FLAGS \
            >> "$DOCKERD_LOG" 2>&1 < /dev/null 9>&- &
        pid=$!
        log "started dockerd (pid $pid, log $DOCKERD_LOG, flags: $DOCKERD_FLAGS)"
    fi
    dockerd_log_tail() {  # the end of what the latest start wrote (from our last === marker)
        echo "---- $DOCKERD_LOG (tail) ----" >&2
        awk '/^=== / { n = 0 } { buf[n++] = $0 } END { s = n > 30 ? n - 30 : 0; for (i = s; i < n; i++) print buf[i] }' \
            "$DOCKERD_LOG" >&2 2>/dev/null || true
    }
    deadline=$(( $(date +%s) + DOCKERD_TIMEOUT ))
    until engine_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            dockerd_log_tail
            die "dockerd exited before the engine answered (see $DOCKERD_LOG)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            dockerd_log_tail
            die "docker engine not answering after ${DOCKERD_TIMEOUT}s (dockerd pid $pid still running; see $DOCKERD_LOG)"
        fi
        sleep 0.25
    done
    STARTED_DOCKERD=1
    log "engine answering after $(since "$t") s"
fi

# --------------------------------------------------------------------------- 3. base image
# Print "URI" of the first enabled `deb` source for suite $1 with component main, read from
# apt's own configuration: one-line *.list files and deb822 *.sources files.
apt_source_uri() {
    local suite=$1 files=() etc=${BATCAT_APT_ETC:-/etc/apt}
    [ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
    local f
    for f in "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 1
    local fn
    for fn in "${files[@]}"; do
        case "$fn" in
        *.sources)
            awk -v want="$suite" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false|0)$/ \
                        && (" " suites " ") ~ (" " want " ") \
                        && (comps == "" || (" " comps " ") ~ / main /)) {
                        n = split(uris, u, " "); if (n > 0) { print u[1]; found = 1; exit }
                    }
                    types = uris = suites = comps = enabled = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                {
                    line = $0; key = tolower(line); sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "components") comps = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                END { if (!found) flush() }' "$fn"
            ;;
        *)
            awk -v want="$suite" '
                /^[ \t]*deb[ \t]/ {
                    line = $0; sub(/#.*/, "", line); gsub(/\[[^]]*\]/, " ", line)
                    n = split(line, a, /[ \t]+/); i = 1; if (a[1] == "") i = 2
                    if (a[i] != "deb") next
                    uri = a[i+1]; s = a[i+2]; main = 0
                    for (j = i + 3; j <= n; j++) if (a[j] == "main") main = 1
                    if (s == want && main) { print uri; exit }
                }' "$fn"
            ;;
        esac
    done | head -n 1
}

signed_by_for() {  # keyring named by the deb822 stanza that holds URI $1 (empty if none)
    local f
    for f in "${BATCAT_APT_ETC:-/etc/apt}"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v uri="$1" '
            /^[ \t]*$/ { if (hit && key != "") { print key; exit } hit = 0; key = ""; next }
            tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i == uri) hit = 1 }
            tolower($1) == "signed-by:" && $2 ~ /^\// { key = $2 }
            END { if (hit && key != "") print key }' "$f"
    done | head -n 1
}

build_base_image() {
    need_root "building $BASE_IMAGE"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap

    local mirror=${BATCAT_DEBIAN_MIRROR:-}
    [ -n "$mirror" ] || mirror=$(apt_source_uri "$SUITE" || true)
    [ -n "$mirror" ] || die "no 'deb ... $SUITE main' source in /etc/apt/sources.list{,.d/} (set BATCAT_DEBIAN_MIRROR)"
    mirror=${mirror%/}
    local keyring arch
    keyring=$(signed_by_for "$mirror" || true)
    [ -n "$keyring" ] || keyring=$(signed_by_for "$mirror/" || true)
    arch=$(dpkg --print-architecture)
    local kr_args=()
    [ -n "$keyring" ] && [ -f "$keyring" ] && kr_args=(--keyring "$keyring")

    ROOTFS=$(mktemp -d /var/tmp/batcat-rootfs.XXXXXX)
    local t; t=$(now)
    log "debootstrap --variant=minbase $SUITE ($arch) from $mirror into $ROOTFS ..."
    if ! debootstrap --variant=minbase --arch="$arch" --components=main "${kr_args[@]}" \
            --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$mirror" > "$ROOTFS.debootstrap.log" 2>&1; then
        tail -n 30 "$ROOTFS.debootstrap.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
        rm -f "$ROOTFS.debootstrap.log"
        die "debootstrap failed"
    fi
    rm -f "$ROOTFS.debootstrap.log"
    log "debootstrap done in $(since "$t") s"

    # apt sources inside the image: the same mirrors as this machine for suite, -updates, -security.
    local s uri lines=""
    for s in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
        uri=$(apt_source_uri "$s" || true)
        [ "$s" = "$SUITE" ] && uri=$mirror
        [ -n "$uri" ] && lines+="deb ${uri%/} $s main"$'\n'
    done
    printf '%s' "$lines" > "$ROOTFS/etc/apt/sources.list"

    if [ "${BATCAT_BASE_UPGRADE:-1}" = 1 ] && [ "$(grep -c . "$ROOTFS/etc/apt/sources.list")" -gt 1 ]; then
        t=$(now)
        # Pass through this machine's apt freshness checks (a snapshot mirror needs them off).
        local apt_opts=() v
        v=$(eval "$(apt-config shell V Acquire::Check-Valid-Until)"; echo "${V:-}")
        [ -n "$v" ] && apt_opts+=(-o "Acquire::Check-Valid-Until=$v")
        v=$(eval "$(apt-config shell V Acquire::Check-Date)"; echo "${V:-}")
        [ -n "$v" ] && apt_opts+=(-o "Acquire::Check-Date=$v")
        mount -t proc proc "$ROOTFS/proc"
        if chroot "$ROOTFS" apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 \
           && DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get "${apt_opts[@]}" \
                -y -qq --no-install-recommends upgrade >/dev/null 2>&1; then
            log "applied $SUITE-updates/$SUITE-security in $(since "$t") s"
        else
            log "WARNING: could not apply updates inside the base image; continuing with $SUITE as released"
        fi
        umount "$ROOTFS/proc"
    fi

    # Slim down and drop host-specific files (docker provides resolv.conf/hosts/hostname at run time).
    chroot "$ROOTFS" apt-get clean >/dev/null 2>&1 || true
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
           "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
           "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian \
           "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* \
           "$ROOTFS"/root/.cache
    find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
    find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    : > "$ROOTFS/etc/resolv.conf"
    echo localhost > "$ROOTFS/etc/hostname"
    rm -f "$ROOTFS/etc/machine-id"; : > "$ROOTFS/etc/machine-id"
    # Debian's python marks the system env as externally managed; the runner image uses a venv.

    t=$(now)
    local pyver
    pyver=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    log "docker import -> $BASE_IMAGE (python $pyver, rootfs $(du -sh --one-file-system "$ROOTFS" | cut -f1)) ..."
    tar --numeric-owner --one-file-system -C "$ROOTFS" -c . | dk import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL org.opencontainers.image.title=batcat-base org.opencontainers.image.description=\"Debian $SUITE minbase + python3 (debootstrap)\" io.batcat.python=$pyver io.batcat.suite=$SUITE" \
        --change 'CMD ["python3"]' \
        --message "batcat base: debootstrap --variant=minbase $SUITE + $BASE_PACKAGES" \
        - "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE in $(since "$t") s"
}

pullable() {  # the preferred base is here, or a pull of it succeeds within a minute
    [ -n "$PULL_BASE" ] || return 1
    dk image inspect "$PULL_BASE" >/dev/null 2>&1 && return 0
    timeout 60 "$DOCKER_BIN" -H "unix://$DOCKER_SOCK" pull -q "$PULL_BASE" >/dev/null 2>&1
}

if [ "${BATCAT_FORCE_BASE:-0}" != 1 ] && dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE already present"
    BUILT_BASE=0
elif [ "${BATCAT_FORCE_BASE:-0}" != 1 ] && pullable; then
    log "base image $PULL_BASE is available; $BASE_IMAGE is not needed"
    BASE_IMAGE=$PULL_BASE
    BUILT_BASE=0
else
    t_base=$(now)
    old_id=$(dk image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    build_base_image
    # A forced rebuild leaves the previous image untagged: drop it unless something still uses it.
    if [ -n "$old_id" ] && [ "$old_id" != "$(dk image inspect --format '{{.Id}}' "$BASE_IMAGE")" ]; then
        if dk image rm "$old_id" >/dev/null 2>&1; then log "removed the previous $BASE_IMAGE (${old_id#sha256:})"; fi
    fi
    log "base image $BASE_IMAGE built in $(since "$t_base") s"
    BUILT_BASE=1
fi

# --------------------------------------------------------------------------- summary
server_ver=$(dk version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
client_ver=$(dk version --format '{{.Client.Version}}' 2>/dev/null || echo '?')
# Does a plain `docker` (this shell's DOCKER_HOST / context) reach the same engine?
want_id=$(dk info --format '{{.ID}}' 2>/dev/null || true)
got_id=$("$DOCKER_BIN" info --format '{{.ID}}' 2>/dev/null || true)
if [ "$want_id" != "$got_id" ]; then
    log "WARNING: plain \`docker\` does not reach unix://$DOCKER_SOCK (DOCKER_HOST=${DOCKER_HOST:-unset}," \
        "context $("$DOCKER_BIN" context show 2>/dev/null || echo '?')); unset DOCKER_HOST / run \`docker context use default\`"
fi
base_size=$(dk image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')
log "ok: client $DOCKER_BIN $client_ver, engine $server_ver on unix://$DOCKER_SOCK," \
    "base $BASE_IMAGE ($base_size); installed_docker=$INSTALLED_DOCKER started_dockerd=$STARTED_DOCKERD" \
    "built_base=$BUILT_BASE; total $(since "$T_START") s"
