#!/usr/bin/env bash
# The fan-out benchmarks of compare-etcd with auth enabled (issue 13: "no figure
# worse than 1.1× the same run without auth"). Side by side in one run, the two
# systems alternating run by run (reversed in even repetitions), each run on a
# freshly started `argus serve --fsync always` with a fresh data directory:
#
#   argus-always  auth disabled; the load generator sends no token
#   argus-auth    auth enabled with etcdctl (user root; user bench with role bench:
#                 READWRITE on the prefix /argus-bench, which every key of the
#                 scenarios is under); the load generator connects as bench: one
#                 Auth.Authenticate per connection, the token on every call,
#                 Watch streams included
#
# Scenarios, the shapes of compare-etcd's: fanout-w1000 (puts as fast as
# possible), fanout-rate200 (1,000 watchers, 200 puts/s), fanout-w10k (10,000
# watchers over 100 streams; 1,000 puts rather than compare-etcd's 300, so the
# measured phase lasts seconds, not under one, and a 10% difference is not lost
# in the 10 ms resolution of the server's CPU time), create-10k and create-100k
# (watcher creation: 10,000 take some 40 ms, so the 100,000 are the steadier
# figure of creation rate and memory per watcher). Writes results/auth-fanout.json and
# results/auth-fanout.md (`argus-bench auth-report`); never edit those by hand.
#
#   scripts/bench-auth.sh            # 4 repetitions: about 3 minutes on 2 cores after the build
#   QUICK=1 scripts/bench-auth.sh    # tiny sizes, one repetition: a smoke test
#   argus-bench auth-report --runs results/auth-fanout.json --out-dir results   # render again
#
# Four, not two: with auth the fan-out path is the same code, so every difference
# is the machine's noise, and two repetitions left single figures (a 200 puts/s
# p99, memory per watcher at 1,000 watchers: 59 KB in all, one allocator page) on
# either side of 1.1× from one run to the next.
#
# Environment: REPS (4), QUICK (0), OUT_DIR (results), ARGUS_PORT (23795),
# ARGUS_BENCH_DIR (where data directories go; default the temporary directory).
# Only the processes this script starts are stopped, by pid (trap EXIT).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

START_S=$(date +%s)
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then REPS="${REPS:-1}"; else REPS="${REPS:-4}"; fi
OUT_DIR="${OUT_DIR:-results}"
ARGUS_PORT="${ARGUS_PORT:-23795}"
DATE="$(date -u)"
ROOT_PW="bench-auth-root"
BENCH_PW="bench-auth-pw"

log() { echo "[bench-auth $(($(date +%s) - START_S))s] $*" >&2; }

if [ "$ARGUS_PORT" -ge 32768 ]; then
    echo "bench-auth: ARGUS_PORT $ARGUS_PORT is not below 32768 (outgoing connections use those)" >&2
    exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$ARGUS_PORT") 2>/dev/null; then
    echo "bench-auth: port $ARGUS_PORT on 127.0.0.1 is in use; set ARGUS_PORT" >&2
    exit 1
fi
command -v etcdctl >/dev/null 2>&1 || { echo "bench-auth: etcdctl is needed to enable auth" >&2; exit 1; }

# --- what is measured, then the release build ----------------------------------
PATHS=(engine server bench-harness Cargo.toml Cargo.lock)
SOURCE="$(measured_source "${PATHS[@]}")"
log "building argus and argus-bench (release)"
build_server_and_bench

# --- scratch space, and stopping what we started --------------------------------
make_work bench-auth

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ctl() { ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$ARGUS_PORT" --command-timeout 10s "$@" >>"$WORK/logs/etcdctl.log" 2>&1; }

# start_server SYSTEM: a fresh data directory and server (auth set up and enabled
# for argus-auth); sets SERVER_PID, SERVER_ADDR and AUTH_ARGS.
start_server() {
    local system="$1"
    SERVER_DATA="$WORK/data-$system-$(date +%s%N)"
    mkdir -p "$SERVER_DATA"
    "$ARGUS_BIN" serve --listen "127.0.0.1:$ARGUS_PORT" --data-dir "$SERVER_DATA" --fsync always \
        --progress-interval 10m >>"$WORK/logs/argus.log" 2>&1 &
    SERVER_PID=$!
    SERVER_ADDR="127.0.0.1:$ARGUS_PORT"
    AUTH_ARGS=()
    local deadline=$(($(date +%s) + 60))
    until ctl endpoint health; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "bench-auth: argus did not start; its log:" >&2
            tail -n 20 "$WORK/logs/argus.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    if [ "$system" = argus-auth ]; then
        ctl user add root --new-user-password="$ROOT_PW"
        ctl role add bench
        ctl role grant-permission bench readwrite /argus-bench --prefix
        ctl user add bench --new-user-password="$BENCH_PW"
        ctl user grant-role bench bench
        ctl auth enable
        # Auth is really on: an anonymous put is refused, bench's is not.
        if ctl put /argus-bench-probe x; then
            echo "bench-auth: a put without credentials succeeded after auth enable" >&2
            exit 1
        fi
        ctl --user "bench:$BENCH_PW" put /argus-bench-probe x
        AUTH_ARGS=(--user bench --password "$BENCH_PW")
    fi
}

# run SCENARIO SYSTEM REP SUBCOMMAND ARGS...: one run on a fresh server.
run() {
    local scenario="$1" system="$2" rep="$3"
    shift 3
    start_server "$system"
    local rc=0
    "$BENCH_BIN" "$@" "${AUTH_ARGS[@]}" --endpoint "$SERVER_ADDR" --server-pid "$SERVER_PID" --system "$system" \
        --scenario "$scenario" --rep "$rep" --timeout 240s --quiet --out "$RUNS/$scenario.$system.$rep.json" >/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        log "$system $scenario rep $rep: exit $rc (recorded in the report)"
    fi
    stop_server
}

# scenario NAME REP -- SUBCOMMAND ARGS...: both systems in turn (reversed in even repetitions).
scenario() {
    local name="$1" rep="$2"
    shift 3
    local systems=(argus-always argus-auth)
    [ $((rep % 2)) = 0 ] && systems=(argus-auth argus-always)
    for system in "${systems[@]}"; do
        run "$name" "$system" "$rep" "$@"
    done
}

if [ "$QUICK" = 1 ]; then
    P_FAN=500; P_RATE=200; W_10K=1000; P_10K=20; W_C1=1000; W_C2=5000
else
    P_FAN=5000; P_RATE=2000; W_10K=10000; P_10K=1000; W_C1=10000; W_C2=100000
fi
for rep in $(seq 1 "$REPS"); do
    log "repetition $rep of $REPS"
    scenario fanout-w1000 "$rep" -- fanout --watchers 1000 --streams 1 --puts "$P_FAN"
    scenario fanout-rate200 "$rep" -- fanout --watchers 1000 --streams 1 --rate 200 --puts "$P_RATE"
    scenario fanout-w10k "$rep" -- fanout --watchers "$W_10K" --streams 100 --connections 4 --puts "$P_10K"
    scenario create-10k "$rep" -- watch-create --watchers "$W_C1" --streams 100
    scenario create-100k "$rep" -- watch-create --watchers "$W_C2" --streams 100
done

mkdir -p "$OUT_DIR"
COMMAND="scripts/bench-auth.sh"
[ "$QUICK" = 1 ] && COMMAND="QUICK=1 $COMMAND"
"$BENCH_BIN" auth-report --runs "$RUNS" --out-dir "$OUT_DIR" --command "$COMMAND" --date "$DATE" \
    --source "$SOURCE" --script-seconds "$(($(date +%s) - START_S))" --data-root "$WORK"
log "done in $(($(date +%s) - START_S)) s; see $OUT_DIR/auth-fanout.md"
