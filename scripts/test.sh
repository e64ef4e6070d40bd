#!/usr/bin/env bash
# The test command of the README: installs what the tests need on a fresh machine
# (idempotent), then runs formatting and lint checks, the workspace tests and the
# loom models. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

log "toolchain"
cargo --version
rustc --version

log "format"
cargo fmt --all -- --check

log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "workspace tests"
cargo test --workspace --locked

if [ -x scripts/loom.sh ]; then
    log "loom models"
    scripts/loom.sh
fi

if [ -x scripts/fuzz-build.sh ]; then
    log "fuzz target builds"
    scripts/fuzz-build.sh
fi

log "all tests passed"
