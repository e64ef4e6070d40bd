#!/usr/bin/env bash
# Miri over the log's storage, mapping and segment code (the raw-pointer and
# `unsafe` parts of the on-disk side) and the record codec: checks them for
# undefined behaviour, data races included. Installs Miri on the nightly
# toolchain when missing. Usage: scripts/miri.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
    rustup +nightly component add miri rust-src
fi
start=$(date +%s)
# Memory-mapped files and the file system are outside what Miri runs: the tests
# here use MemStorage, whose Mapping is the same type with a heap buffer behind it.
cargo +nightly miri test -p argus-engine --lib -- log::storage log::segment log::record
echo "== miri done in $(( $(date +%s) - start )) s"
