#!/usr/bin/env bash
# Runs the loom models of loom-tests/ on the engine's own code, then each model's
# seeded-bug twin, which must fail (its test is `should_panic` under the feature).
# Usage: scripts/loom.sh [test-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-100000}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
filter="${1:-}"
start=$(date +%s)

# The model files of loom-tests/tests/.
tests=(--test models --test group_commit)

echo "== loom models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
cargo test -p argus-loom-tests --release "${tests[@]}" -- --test-threads=1 --nocapture $filter

# model test name : the feature that seeds its bug [: its test file, if not models]
twins=(
  "log_append_and_publish_race_a_reader:bug-publish-before-write"
  "victim_retry_races_the_consumer_draining:bug-lost-victim-retry"
  "unsynced_to_synced_handoff_races_the_notifier:bug-early-handoff"
  "catchup_result_races_a_cancel_that_reuses_the_group_slot:bug-stale-handle"
  "a_blocked_consumer_is_woken_by_a_delivery:bug-lost-wakeup"
  "progress_request_races_events:bug-progress-ahead"
  "group_commit_two_writers:bug-early-wake:group_commit"
  "group_commit_three_writers:bug-early-wake:group_commit"
  "group_commit_two_writers:bug-lost-handoff:group_commit"
  "group_commit_three_writers:bug-lost-handoff:group_commit"
)
for t in "${twins[@]}"; do
  IFS=: read -r name feature file <<< "$t"
  file="${file:-models}"
  if [ -n "$filter" ] && [[ "$name" != *"$filter"* ]]; then continue; fi
  echo "== twin: $name with $feature (loom must find the seeded bug)"
  cargo test -p argus-loom-tests --release --test "$file" --features "$feature" -- --exact "$name"
done
if [ -z "$filter" ]; then
  echo "== loom models again, deeper (LOOM_MAX_PREEMPTIONS=4; they are small enough)"
  LOOM_MAX_PREEMPTIONS=4 cargo test -p argus-loom-tests --release "${tests[@]}" -- --test-threads=1 --nocapture
fi
echo "== loom done in $(( $(date +%s) - start )) s"
