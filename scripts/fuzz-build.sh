#!/usr/bin/env bash
# Checks that the cargo-fuzz targets in fuzz/ build.
#
#   scripts/fuzz-build.sh             # stable `cargo check`, plus `cargo fuzz build`
#                                     # when nightly is installed (cargo-fuzz is
#                                     # installed if missing)
#   FUZZ_SECONDS=60 scripts/fuzz-build.sh   # ... then fuzz record_decode for 60 s
#
# fuzz/ is its own workspace (outside the root one), so this never touches the
# root's Cargo.lock or target directory; its build output is fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

echo "+ cargo check --manifest-path fuzz/Cargo.toml (stable)" >&2
cargo check --bins

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "nightly toolchain not installed: skipped 'cargo fuzz build' (libFuzzer's sanitizer flags need nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    # Installed like everything else the tests need (a few minutes, once a machine).
    echo "+ cargo install cargo-fuzz --locked" >&2
    if ! cargo install cargo-fuzz --locked; then
        echo "cargo-fuzz could not be installed: skipped 'cargo fuzz build'" >&2
        exit 0
    fi
fi
echo "+ cargo +nightly fuzz build record_decode" >&2
cargo +nightly fuzz build record_decode

if [ -n "${FUZZ_SECONDS:-}" ]; then
    echo "+ cargo +nightly fuzz run record_decode -- -max_total_time=$FUZZ_SECONDS" >&2
    cargo +nightly fuzz run record_decode -- -max_total_time="$FUZZ_SECONDS"
fi
