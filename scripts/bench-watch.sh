#!/usr/bin/env bash
# Runs the watch-engine benchmarks and turns that one run into results/watch.json,
# results/watch.md and the watch section of results/README.md
# (bench-harness/src/bin/watch-report.rs). Never edit those by hand: rerun this.
#
#   scripts/bench-watch.sh        # everything, about 15 minutes on 2 cores
#   QUICK=1 scripts/bench-watch.sh  # smoke run: criterion times and isolation rounds
#                                   # cut to a tenth, no 10M run, one catch-up run of
#                                   # each; the report goes to OUT_DIR (default
#                                   # $CARGO_TARGET_DIR/watch-quick), not results/
#
# Parts, in order:
#   1. criterion suite bench-harness/benches/watch.rs: the floor, fan-out to 100k
#      watchers paired with the floor, etcd mvcc equivalents, write isolation;
#   2. watch-memory (own process, counting allocator): 1M watchers on distinct keys
#      (with the notifier probes), 1M on distinct prefixes, 10M on distinct keys;
#   3. watch-catchup (own process per run, RAYON_NUM_THREADS=1 and 2 alternating,
#      CATCHUP_RUNS runs of each);
#   4. watch-report.
#
# Environment: CARGO_TARGET_DIR (default ./target-wbench), ARGUS_BENCH_DIR (where
# data directories are made; default the system temporary directory),
# CATCHUP_RUNS (default 7), SKIP_10M=1 to leave out the 10M-watcher run, OUT_DIR
# (default results), ETCD_SYNCED_CANCEL_NS and ETCD_UNSYNCED_CANCEL_NS (etcd's
# BenchmarkWatchableStore{Synced,Unsynced}Cancel per cancel measured on this
# machine, for the cancel goals; default: issue 9's figure, 1.1 µs, for both).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-wbench}"
export ARGUS_WATCH_OUT="$CARGO_TARGET_DIR/watch-results"
BASELINE=watch-report
QUICK="${QUICK:-0}"
OUT_DIR="${OUT_DIR:-results}"
if [ "$QUICK" = 1 ]; then
    export ARGUS_WATCH_QUICK=1
    SKIP_10M=1
    CATCHUP_RUNS="${CATCHUP_RUNS:-1}"
    [ "$OUT_DIR" = results ] && OUT_DIR="$CARGO_TARGET_DIR/watch-quick"
fi
CATCHUP_RUNS="${CATCHUP_RUNS:-7}"
LOG="$CARGO_TARGET_DIR/bench-watch.log"
rm -rf "$ARGUS_WATCH_OUT"
mkdir -p "$ARGUS_WATCH_OUT"

DATE="$(date -u)"
# What is measured: the commit, and a digest of uncommitted changes to the code
# that is benchmarked (tracked diffs and untracked files), taken before building.
PATHS=(engine bench-harness Cargo.toml Cargo.lock)
SOURCE="$(measured_source "${PATHS[@]}")"

cargo build --release -q -p argus-bench --bin watch-memory --bin watch-catchup --bin watch-report
BIN="$CARGO_TARGET_DIR/release"

BENCH_CMD=(cargo bench -p argus-bench --bench watch -- --save-baseline "$BASELINE")
echo "+ CARGO_TARGET_DIR=$CARGO_TARGET_DIR ${BENCH_CMD[*]}" >&2
"${BENCH_CMD[@]}" 2>&1 | tee "$LOG"

run() {
    echo "+ $*" >&2
    "$@" 2>&1 | tee -a "$LOG"
}
run "$BIN/watch-memory" --watchers 1000000 --kind key --probes
run "$BIN/watch-memory" --watchers 1000000 --kind prefix
if [ "${SKIP_10M:-0}" != 1 ]; then
    run "$BIN/watch-memory" --watchers 10000000 --kind key
fi

for i in $(seq 1 "$CATCHUP_RUNS"); do
    for t in 1 2; do
        if ! run env RAYON_NUM_THREADS=$t timeout 300 "$BIN/watch-catchup" --name "catchup-$t-$i"; then
            echo "watch-catchup with RAYON_NUM_THREADS=$t (run $i) failed or timed out" | tee -a "$LOG" >&2
        fi
    done
done

ETCD_CANCEL=()
[ -n "${ETCD_SYNCED_CANCEL_NS:-}" ] && ETCD_CANCEL+=(--etcd-synced-cancel-ns "$ETCD_SYNCED_CANCEL_NS")
[ -n "${ETCD_UNSYNCED_CANCEL_NS:-}" ] && ETCD_CANCEL+=(--etcd-unsynced-cancel-ns "$ETCD_UNSYNCED_CANCEL_NS")
COMMAND_PREFIX=""
[ "$QUICK" = 1 ] && COMMAND_PREFIX="QUICK=1 "
TEN_M_CMD=" watch-memory --watchers 10000000;"
[ "${SKIP_10M:-0}" = 1 ] && TEN_M_CMD=""
REPORT_CMD=("$BIN/watch-report"
    --criterion-dir "$CARGO_TARGET_DIR/criterion" --baseline "$BASELINE"
    --results "$ARGUS_WATCH_OUT" --out-dir "$OUT_DIR" "${ETCD_CANCEL[@]}"
    --command "${COMMAND_PREFIX}scripts/bench-watch.sh, i.e. CARGO_TARGET_DIR=target-wbench ${BENCH_CMD[*]}; watch-memory --watchers 1000000 --kind key --probes; watch-memory --watchers 1000000 --kind prefix;${TEN_M_CMD} ${CATCHUP_RUNS}x RAYON_NUM_THREADS={1,2} watch-catchup; watch-report"
    --date "$DATE" --source "$SOURCE")
echo "+ watch-report ..." >&2
"${REPORT_CMD[@]}"
