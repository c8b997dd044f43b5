#!/usr/bin/env bash
# The project's test command: every crate's unit, property and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets "$@"
