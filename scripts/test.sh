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

# etcd (server and etcdctl 3.4, for the conformance tests that run both side by
# side), protoc (the etcd-client crate's build script runs it) and curl (the HTTP
# gateway's conformance tests), from the distribution's packages; skipped when
# already there.
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v curl >/dev/null || need+=(curl)
# node and npm: the conformance test of Node's etcd3 client (server/tests/js).
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
etcd --version | sed -n 1p
etcdctl version | sed -n 1p
echo "node $(node --version), npm $(npm --version)"

log "npm packages of the Node client test (server/tests/js, from its lock file)"
npm ci --prefix server/tests/js --ignore-scripts --no-audit --no-fund --loglevel=error

log "format"
cargo fmt --all -- --check

log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "workspace tests"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$test_log"

if [ -x scripts/loom.sh ]; then
    log "loom models"
    scripts/loom.sh
fi

if [ -x scripts/miri.sh ]; then
    log "miri (the log's storage, mapping, segment and record code)"
    scripts/miri.sh
fi

if [ -x scripts/fuzz-build.sh ]; then
    log "fuzz targets (build; 30 s of fuzzing each with nightly)"
    scripts/fuzz-build.sh
fi

log "all tests passed"
# One summary line over every `cargo test` binary of the workspace run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$test_log"
