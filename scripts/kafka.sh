#!/usr/bin/env bash
# Makes a Kafka-protocol broker available on 127.0.0.1:9092 for tests, CI and the README: tansu
# (Apache-Kafka-compatible, from crates.io) with in-memory storage. Installs it when absent
# (a 15-20 minute build on 2 cores, so an installed binary is always reused), starts it when
# nothing listens on the port, and creates the topics. Idempotent.
# Usage: [PARTITIONS=4] scripts/kafka.sh [TOPIC ...]
# Without topics it creates crowdpulse's defaults: one per event kind, the mixed topic, the
# dead-letter topic and the content-download preset's topic.
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER=127.0.0.1:9092
PARTITIONS=${PARTITIONS:-4}
LOG=${KAFKA_LOG:-target/tansu.log}
TOPICS=("$@")
if [ ${#TOPICS[@]} -eq 0 ]; then
    TOPICS=(chat reactions viewers transactions stream_meta events dead_letters downloads)
fi

log() { echo "kafka: $*" >&2; }

listening() { (exec 3<>"/dev/tcp/${BROKER%:*}/${BROKER#*:}") 2>/dev/null; }

ensure_installed() {
    export PATH="$HOME/.cargo/bin:$PATH"
    if command -v tansu >/dev/null 2>&1; then
        return
    fi
    log "installing tansu (cargo install; takes 15-20 minutes on 2 cores)"
    # dynostore provides the memory:// storage engine; libsql the sqlite:// one scripts/soak uses.
    cargo install tansu --locked --features dynostore,libsql
}

ensure_running() {
    if listening; then
        log "a broker is listening on $BROKER"
        return
    fi
    mkdir -p "$(dirname "$LOG")"
    log "starting tansu on $BROKER (memory storage, log in $LOG)"
    # The advertised listener must equal the listener: clients reconnect to what metadata names.
    nohup tansu broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
        --storage-engine memory://tansu/ >"$LOG" 2>&1 &
    for _ in $(seq 1 100); do
        listening && return
        sleep 0.1
    done
    log "tansu did not start; see $LOG" && exit 1
}

ensure_topics() {
    for topic in "${TOPICS[@]}"; do
        if output=$(tansu topic create --broker "tcp://$BROKER" --partitions "$PARTITIONS" "$topic" 2>&1); then
            log "created topic $topic ($PARTITIONS partitions)"
        elif grep -qi "exist" <<<"$output"; then
            log "topic $topic exists"
        else
            log "creating topic $topic failed: $output" && exit 1
        fi
    done
}

ensure_installed
ensure_running
ensure_topics
