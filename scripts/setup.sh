#!/usr/bin/env bash
# Makes sure what crowdpulse's tests and demos need is installed and running. Idempotent.
# Today the test suite needs only the Rust toolchain; PostgreSQL is prepared for the sink
# (it is started, or installed from Debian's packages, when absent).
set -euo pipefail

log() { echo "setup: $*" >&2; }

ensure_postgres() {
    if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        log "postgres is up on 127.0.0.1:5432"
        return
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "installing postgresql"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
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

ensure_postgres
