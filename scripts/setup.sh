#!/usr/bin/env bash
# Makes sure what crowdpulse's tests and demos need is installed and running. Idempotent.
# The dashboard test needs Debian's Chromium (and an emoji font so its screenshot shows the
# buttons' glyphs); PostgreSQL comes from scripts/postgres.sh and the Kafka-protocol broker from
# scripts/kafka.sh. Each is installed from Debian's packages (or crates.io), or started, only
# when absent.
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

ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        log "promtool is installed"
        return
    fi
    log "installing prometheus (for promtool check metrics)"
    apt_install --no-install-recommends prometheus
}

ensure_chromium
ensure_promtool
bash "$(dirname "$0")/postgres.sh"
# The Kafka integration tests need the broker on 127.0.0.1:9092.
bash "$(dirname "$0")/kafka.sh"
