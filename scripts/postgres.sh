#!/usr/bin/env bash
# Makes a PostgreSQL server and crowdpulse's database available for setup, CI, tests and the
# README: installs Debian's postgresql when absent, starts the cluster when nothing answers on
# 127.0.0.1:5432, and creates the database (default crowdpulse) when missing. Idempotent.
# Usage: [PGDATABASE=crowdpulse] scripts/postgres.sh
# Connect with: postgresql://postgres@127.0.0.1:5432/crowdpulse (trust auth on loopback).
set -euo pipefail

DATABASE=${PGDATABASE:-crowdpulse}
log() { echo "postgres: $*" >&2; }

ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! ready; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "installing postgresql"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
    fi
    version=$(ls /etc/postgresql | sort -V | tail -1)
    log "starting postgres $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
        || pg_ctlcluster "$version" main start
    for _ in $(seq 1 30); do
        ready && break
        sleep 1
    done
    ready || { log "postgres did not become ready"; exit 1; }
fi
log "up on 127.0.0.1:5432"

# Trust auth for local connections is Debian's default for the postgres user over the socket;
# tests connect over TCP as postgres, so make sure that works too.
psql_as_postgres() {
    if psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1" >/dev/null 2>&1; then
        psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
    else
        su postgres -c "psql -d postgres -v ON_ERROR_STOP=1 -tAc \"$1\""
    fi
}
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1" >/dev/null 2>&1; then
    hba=$(su postgres -c "psql -tAc 'show hba_file'")
    log "allowing trust auth on loopback in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    su postgres -c "psql -tAc 'select pg_reload_conf()'" >/dev/null
fi
if [ "$(psql_as_postgres "select 1 from pg_database where datname = '$DATABASE'")" != "1" ]; then
    psql_as_postgres "create database \"$DATABASE\"" >/dev/null
    log "created database $DATABASE"
else
    log "database $DATABASE exists"
fi
