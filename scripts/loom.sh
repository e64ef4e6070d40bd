#!/usr/bin/env bash
# Runs the loom models of loom-tests/ on the engine's own code, then each model's
# seeded-bug twin, which must fail: built with ARGUS_BUG=<bug>, which engine/build.rs
# turns into `--cfg argus_bug="<bug>"` for the engine and the loom tests (the twin's
# test is `should_panic` under that cfg). A cfg, not a cargo feature, so that
# `--all-features` never builds a seeded bug; set by the build script rather than
# RUSTFLAGS so that each twin rebuilds only the engine and the tests.
# Usage: scripts/loom.sh [test-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-100000}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
unset ARGUS_BUG  # the plain models run without a seeded bug; twins set it per run
filter="${1:-}"
start=$(date +%s)

# The model files of loom-tests/tests/.
tests=(--test models --test group_commit)

echo "== loom models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
cargo test -p argus-loom-tests --release "${tests[@]}" -- --test-threads=1 --nocapture $filter

# model test name : the seeded bug (ARGUS_BUG) [: its test file, if not models]
twins=(
  "log_append_and_publish_race_a_reader:publish-before-write"
  "victim_retry_races_the_consumer_draining:lost-victim-retry"
  "unsynced_to_synced_handoff_races_the_notifier:early-handoff"
  "catchup_result_races_a_cancel_that_reuses_the_group_slot:stale-handle"
  "a_blocked_consumer_is_woken_by_a_delivery:lost-wakeup"
  "progress_request_races_events:progress-ahead"
  "group_commit_two_writers:early-wake:group_commit"
  "group_commit_three_writers:early-wake:group_commit"
  "group_commit_two_writers:lost-handoff:group_commit"
  "group_commit_three_writers:lost-handoff:group_commit"
)
for t in "${twins[@]}"; do
  IFS=: read -r name bug file <<< "$t"
  file="${file:-models}"
  if [ -n "$filter" ] && [[ "$name" != *"$filter"* ]]; then continue; fi
  echo "== twin: $name with argus_bug=\"$bug\" (loom must find the seeded bug)"
  ARGUS_BUG="$bug" cargo test -p argus-loom-tests --release --test "$file" -- --exact "$name"
done
if [ -z "$filter" ]; then
  echo "== loom models again, deeper (LOOM_MAX_PREEMPTIONS=4; they are small enough)"
  LOOM_MAX_PREEMPTIONS=4 cargo test -p argus-loom-tests --release "${tests[@]}" -- --test-threads=1 --nocapture
fi
echo "== loom done in $(( $(date +%s) - start )) s"
