#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and fuzzes each briefly.
#
#   scripts/fuzz-build.sh                  # stable `cargo check`; with nightly (cargo-fuzz
#                                          # is installed if missing): `cargo fuzz build`,
#                                          # then 30 s of fuzzing per target
#   FUZZ_SECONDS=600 scripts/fuzz-build.sh # ... 10 minutes per target
#   FUZZ_SECONDS=0 scripts/fuzz-build.sh   # build only
#
# Each run starts from the committed seeds (fuzz/seeds/<target>/, read only) and
# the local corpus (fuzz/corpus/<target>/, ignored by git, where new inputs go).
# LeakSanitizer is off: the store's key index is a crossbeam skip list whose
# removed nodes are freed by epoch-based reclamation, later and on whichever thread
# next advances the epoch, so a short-lived input leaves garbage that is not a leak
# (the soak test bounds the server's memory instead).
#
# fuzz/ is its own workspace (outside the root one), so this never touches the
# root's Cargo.lock or target directory; its build output is fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
targets=(record_decode kv_watch_requests)
seconds="${FUZZ_SECONDS:-30}"

echo "+ cargo check --manifest-path fuzz/Cargo.toml (stable)" >&2
cargo check --bins --locked

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
for t in "${targets[@]}"; do
    echo "+ cargo +nightly fuzz build $t" >&2
    cargo +nightly fuzz build "$t"
done

if [ "$seconds" -gt 0 ]; then
    for t in "${targets[@]}"; do
        mkdir -p "corpus/$t"
        dirs=("corpus/$t")
        if [ -d "seeds/$t" ]; then dirs+=("seeds/$t"); fi
        echo "+ ASAN_OPTIONS=detect_leaks=0 cargo +nightly fuzz run $t ${dirs[*]} -- -max_total_time=$seconds -detect_leaks=0" >&2
        # (pipefail: the pipeline fails when the fuzzer does; the filter only
        # drops libFuzzer's per-input progress lines)
        # (-detect_leaks=0 stops libFuzzer's per-input check; ASAN_OPTIONS the one
        # AddressSanitizer runs at exit, which reported the skip list's deferred nodes)
        if ! ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
            cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$seconds" -detect_leaks=0 2>&1 \
            | { grep -Ev '^#[0-9]+.*(NEW|REDUCE|pulse)' || true; }; then
            echo "fuzzing $t failed (see above; the input is in fuzz/artifacts/$t/)" >&2
            exit 1
        fi
    done
fi
