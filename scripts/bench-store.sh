#!/usr/bin/env bash
# Runs the store benchmarks (bench-harness/benches/store.rs) and turns that one run
# into results/store.json and results/store.md (bench-harness/src/bin/store-report.rs).
# Never edit those two files by hand: rerun this script.
#
#   scripts/bench-store.sh            # whole suite, about 5 minutes on 2 cores
#   BASELINE=name scripts/bench-store.sh
#   scripts/bench-store.sh --group-commit
#                                     # only put/always/{1,16} and the interleaved
#                                     # group_commit_pairs (under a minute); prints
#                                     # puts/s, ratios and median group sizes, and
#                                     # writes no results/ file
#
# Environment: CARGO_TARGET_DIR (default ./target-bench, kept apart from the other
# engineers' target dirs), ARGUS_BENCH_DIR (where data directories are made;
# default the temporary directory unless it is tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-bench}"
mkdir -p "$CARGO_TARGET_DIR"

if [ "${1:-}" = "--group-commit" ]; then
    # Its own meta file, so a partial run never mixes with a full one's.
    export ARGUS_STORE_META="$CARGO_TARGET_DIR/criterion/argus-store-group-commit-meta.json"
    CMD=(cargo bench -p argus-bench --bench store -- put/always)
    echo "+ CARGO_TARGET_DIR=$CARGO_TARGET_DIR ${CMD[*]}" >&2
    "${CMD[@]}" 2>&1 | tee "$CARGO_TARGET_DIR/bench-store-group-commit.log" \
        | grep -E '^put/always|thrpt|group_commit_pairs|groups of' || true
    echo "(meta: $ARGUS_STORE_META)"
    exit 0
fi

BASELINE="${BASELINE:-store-report}"
export ARGUS_STORE_META="$CARGO_TARGET_DIR/criterion/argus-store-meta.json"
LOG="$CARGO_TARGET_DIR/bench-store.log"

DATE="$(date -u)"
# What is measured: the commit, and a digest of uncommitted changes to the code
# that is benchmarked (tracked diffs and untracked files), taken before building.
PATHS=(engine bench-harness Cargo.toml Cargo.lock)
SOURCE="$(measured_source "${PATHS[@]}")"

BENCH_CMD=(cargo bench -p argus-bench --bench store -- --save-baseline "$BASELINE")
echo "+ CARGO_TARGET_DIR=$CARGO_TARGET_DIR ${BENCH_CMD[*]}" >&2
"${BENCH_CMD[@]}" 2>&1 | tee "$LOG"

REPORT_CMD=(cargo run --release -q -p argus-bench --bin store-report --
    --criterion-dir "$CARGO_TARGET_DIR/criterion" --baseline "$BASELINE"
    --meta "$ARGUS_STORE_META" --out-dir results
    --command "scripts/bench-store.sh, i.e. CARGO_TARGET_DIR=target-bench ${BENCH_CMD[*]}; then store-report --baseline $BASELINE"
    --date "$DATE" --source "$SOURCE")
echo "+ ${REPORT_CMD[*]:0:7} ..." >&2
"${REPORT_CMD[@]}"
