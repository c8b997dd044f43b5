#!/usr/bin/env bash
# Makes sure what crowdpulse's tests and demos need is installed and running. Idempotent.
# The dashboard test needs Debian's Chromium (and an emoji font so its screenshot shows the
# buttons' glyphs); PostgreSQL is prepared for the sink. Each is installed from Debian's
# packages, or started, only when absent. The Kafka-protocol broker comes from scripts/kafka.sh.
set -euo pipefail

log() { echo "setup: $*" >&2; }

apt_updated=false
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$apt_updated" = false ]; then
        apt-get update -qq
        apt_updated=true
    fi
    apt-get install -y -qq "$@" >/dev/null
}

ensure_chromium() {
    if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "color emoji"; then
        log "chromium is installed"
        return
    fi
    log "installing chromium and an emoji font"
    apt_install chromium fonts-noto-color-emoji
}

ensure_postgres() {
    if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        log "postgres is up on 127.0.0.1:5432"
        return
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "installing postgresql"
        apt_install postgresql
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    log "starting postgres $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster "$version" main start
    for _ in $(seq 1 30); do
        pg_isready -h 127.0.0.1 -p 5432 -q && return
        sleep 1
    done
    log "postgres did not become ready" && exit 1
}

ensure_chromium
ensure_postgres
# The Kafka integration tests need the broker on 127.0.0.1:9092.
bash "$(dirname "$0")/kafka.sh"
