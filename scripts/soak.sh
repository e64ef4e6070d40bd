#!/usr/bin/env bash
# The soak test (server/tests/soak.rs) alone, in release, for as long as asked:
# the `argus` binary under writers, compactions and watch streams with fast, slow
# and stalling consumers, kill -9 and restarted every round (a round is an eighth
# of the run, at most 2 minutes), every watcher's responses judged by the engine's
# guarantee checker, the server's anonymous RSS bounded. `cargo test` runs the same
# test for 45 s in debug.
#
#   scripts/soak.sh              # one hour
#   scripts/soak.sh 14400        # four hours
#   ARGUS_SEED=123 scripts/soak.sh 600   # replay a seed's choices (not its timing)
#
# Between rounds the test reads the recovered log back into memory (every revision
# since the last compaction, at most about two rounds' worth), so its own memory
# does not grow with the length of the soak.
set -euo pipefail
cd "$(dirname "$0")/.."
export ARGUS_SOAK_SECS="${1:-${ARGUS_SOAK_SECS:-3600}}"
exec cargo test -p argus-server --release --locked --test soak -- --nocapture
