#!/usr/bin/env bash
# Argus and etcd side by side: the same load generator (argus-bench, one tonic
# client for both) runs the same matrix against etcd and Argus on loopback, each
# run on a freshly started server with a fresh data directory, the systems
# alternating, the whole matrix twice. Writes results/compare-etcd.json,
# results/compare-etcd.md and results/compare-etcd-*.svg from that one run; never
# edit those by hand: rerun this script.
#
#   scripts/compare-etcd.sh              # full matrix, 70 runs: an estimated 9 minutes on
#                                        # 2 cores with the build (well under 20)
#   QUICK=1 scripts/compare-etcd.sh      # tiny sizes, the lease scenarios once: a smoke
#                                        # test (1-2 minutes after the build, ~20 s of
#                                        # it the leases)
#
# Durability is matched: etcd fsyncs every commit, so Argus runs with
# `--fsync always`; `--fsync batch` is shown beside it in the scenarios bounded by
# latency or put throughput. For every Argus run the load generator also splits
# the server's CPU by thread name (engine, wire, kv, other; see
# bench-harness/src/loadgen/stats.rs).
#
# Environment: REPS (2), QUICK (0), OUT_DIR (results), ETCD_PORT (23790),
# ETCD_PEER_PORT (23800), ARGUS_PORT (23791), ARGUS_BENCH_DIR (where data
# directories go; default the temporary directory).
# Only the processes this script starts are stopped, by pid (trap EXIT).
set -euo pipefail
cd "$(dirname "$0")/.."

START_S=$(date +%s)
REPS="${REPS:-2}"
QUICK="${QUICK:-0}"
OUT_DIR="${OUT_DIR:-results}"
ETCD_PORT="${ETCD_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
ARGUS_PORT="${ARGUS_PORT:-23791}"
DATE="$(date -u)"

log() { echo "[compare-etcd $(($(date +%s) - START_S))s] $*" >&2; }

# --- etcd from the distribution's package -------------------------------------
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    log "installing etcd-server and etcd-client (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q etcd-server etcd-client
fi
ETCD_BIN="$(command -v etcd)"
log "etcd: $("$ETCD_BIN" --version | head -1)"

for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$ARGUS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "compare-etcd: port $port on 127.0.0.1 is in use; set ETCD_PORT / ETCD_PEER_PORT / ARGUS_PORT" >&2
        exit 1
    fi
done

# --- what is measured, then the release build ----------------------------------
HEAD_SHA="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
PATHS=(engine server bench-harness Cargo.toml Cargo.lock)
if git diff --quiet HEAD -- "${PATHS[@]}" 2>/dev/null && [ -z "$(git ls-files --others --exclude-standard -- "${PATHS[@]}" 2>/dev/null)" ]; then
    SOURCE="$HEAD_SHA"
else
    DIGEST="$( { git diff HEAD -- "${PATHS[@]}"; git ls-files -z --others --exclude-standard -- "${PATHS[@]}" | xargs -0 -r cat; } | sha256sum | cut -c1-16)"
    SOURCE="$HEAD_SHA + uncommitted changes to ${PATHS[*]} (content sha256 $DIGEST)"
fi
BUILD_START=$(date +%s)
log "building argus and argus-bench (release)"
cargo build --release -q -p argus-server -p argus-bench --bin argus --bin argus-bench
BUILD_S=$(($(date +%s) - BUILD_START))
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
ARGUS_BIN="$TARGET_DIR/release/argus"
BENCH_BIN="$TARGET_DIR/release/argus-bench"

# --- scratch space, and stopping what we started --------------------------------
BASE="${ARGUS_BENCH_DIR:-${TMPDIR:-/tmp}}"
WORK="$(mktemp -d "$BASE/compare-etcd.XXXXXX")"
RUNS="$WORK/runs"
mkdir -p "$RUNS" "$WORK/logs"
SERVER_PID=""
SERVER_DATA=""

stop_server() {
    local pid="$SERVER_PID"
    SERVER_PID=""
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$SERVER_DATA" ]; then
        rm -rf "$SERVER_DATA"
        SERVER_DATA=""
    fi
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server SYSTEM: a fresh data directory and server; sets SERVER_PID, SERVER_ADDR.
start_server() {
    local system="$1" n
    n=$(date +%s%N)
    SERVER_DATA="$WORK/data-$system-$n"
    mkdir -p "$SERVER_DATA"
    case "$system" in
        etcd)
            "$ETCD_BIN" --name cmp --data-dir "$SERVER_DATA" \
                --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
                --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
                --initial-cluster "cmp=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
                --logger zap --log-level error >>"$WORK/logs/etcd.log" 2>&1 &
            SERVER_ADDR="127.0.0.1:$ETCD_PORT"
            ;;
        argus-always | argus-batch)
            "$ARGUS_BIN" serve --listen "127.0.0.1:$ARGUS_PORT" --data-dir "$SERVER_DATA" --fsync "${system#argus-}" \
                --progress-interval 10m >>"$WORK/logs/argus.log" 2>&1 &
            SERVER_ADDR="127.0.0.1:$ARGUS_PORT"
            ;;
        *)
            echo "unknown system $system" >&2
            exit 1
            ;;
    esac
    SERVER_PID=$!
}

# run SCENARIO SYSTEM REP SUBCOMMAND ARGS...: one run on a fresh server.
run() {
    local scenario="$1" system="$2" rep="$3"
    shift 3
    start_server "$system"
    local rc=0
    "$BENCH_BIN" "$@" --endpoint "$SERVER_ADDR" --server-pid "$SERVER_PID" --system "$system" \
        --scenario "$scenario" --rep "$rep" --timeout 240s --out "$RUNS/$scenario.$system.$rep.json" >/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        log "$system $scenario rep $rep: exit $rc (recorded in the report)"
    fi
    stop_server
}

# --- the matrix -----------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    H=5000; W_CATCHUP=20; P_FAN=500; P_RATE=200; P_LIGHT=200; P_10K=20; W_10K=1000; P_W1=1000; P_W100=300
    P_PUT=2000; W_PUT=1000; W_C1=1000; W_C2=5000; MAXS=5
    L_KA=1000; L_KA_SECS=0.5; L_KA_WARM=0.2; L_EXP=1000; L_EXP_TTL=3; L_IDLE=0.5; L_MEM=5000
else
    H=100000; W_CATCHUP=100; P_FAN=5000; P_RATE=2000; P_LIGHT=1000; P_10K=300; W_10K=10000; P_W1=10000; P_W100=3000
    P_PUT=10000; W_PUT=10000; W_C1=10000; W_C2=100000; MAXS=10
    L_KA=10000; L_KA_SECS=5; L_KA_WARM=1; L_EXP=20000; L_EXP_TTL=10; L_IDLE=3; L_MEM=100000
fi

# scenario NAME REP SYSTEMS... -- SUBCOMMAND ARGS...: the systems in turn (reversed
# in even repetitions).
scenario() {
    local name="$1" rep="$2"
    shift 2
    local systems=()
    while [ "$1" != "--" ]; do
        systems+=("$1")
        shift
    done
    shift
    if [ $((rep % 2)) = 0 ]; then
        local rev=()
        for ((i = ${#systems[@]} - 1; i >= 0; i--)); do rev+=("${systems[i]}"); done
        systems=("${rev[@]}")
    fi
    for system in "${systems[@]}"; do
        run "$name" "$system" "$rep" "$@"
    done
}

ALL=(etcd argus-always argus-batch)
TWO=(etcd argus-always)
for rep in $(seq 1 "$REPS"); do
    log "repetition $rep of $REPS"
    scenario catchup "$rep" "${TWO[@]}" -- catchup --history "$H" --watchers "$W_CATCHUP" --streams 1 --connections 4 --check-watchers 2
    scenario fanout-w1000 "$rep" "${ALL[@]}" -- fanout --watchers 1000 --streams 1 --puts "$P_FAN"
    scenario fanout-rate200 "$rep" "${ALL[@]}" -- fanout --watchers 1000 --streams 1 --rate 200 --puts "$P_RATE"
    # Light load (etcd's `benchmark watch-latency` shape): 100 watchers on one key,
    # 10 connections each carrying one Watch stream of 10, one put client at 100/s.
    scenario light-w100 "$rep" "${ALL[@]}" -- light --watchers 100 --streams 10 --connections 10 --rate 100 --puts "$P_LIGHT" --put-clients 1
    scenario fanout-w10k "$rep" "${TWO[@]}" -- fanout --watchers "$W_10K" --streams 100 --connections 4 --puts "$P_10K"
    scenario fanout-w1 "$rep" "${ALL[@]}" -- fanout --watchers 1 --puts "$P_W1" --max-put-secs "$MAXS"
    scenario fanout-w100 "$rep" "${TWO[@]}" -- fanout --watchers 100 --puts "$P_W100" --max-put-secs "$MAXS"
    scenario put-c16 "$rep" "${ALL[@]}" -- put --clients 16 --puts "$P_PUT" --max-put-secs "$MAXS"
    scenario put-c16-w10k "$rep" "${TWO[@]}" -- put --clients 16 --puts "$P_PUT" --watchers "$W_PUT" --streams 100 --max-put-secs "$MAXS"
    scenario create-10k "$rep" "${TWO[@]}" -- watch-create --watchers "$W_C1" --streams 100
    scenario create-100k "$rep" "${TWO[@]}" -- watch-create --watchers "$W_C2" --streams 100
    # Leases (a smoke test runs them once). Keep-alives: the leases renewed round-robin
    # over 4 connections, one LeaseKeepAlive stream each, 128 requests outstanding;
    # again with one key put with each lease (etcd renews those more slowly; not in a
    # smoke test: the same code).
    # Mass expiry: 16 put clients, then the leases (one key each) granted, renewed once
    # in one burst and left to expire together; 20,000 rather than 100,000 because
    # etcd revokes at most 1,000 leases/s (100 s per run). Memory: 100,000 leases.
    if [ "$QUICK" != 1 ] || [ "$rep" = 1 ]; then
        scenario lease-keepalive "$rep" "${TWO[@]}" -- lease-keepalive --leases "$L_KA" --connections 4 --window 128 \
            --secs "$L_KA_SECS" --warmup-secs "$L_KA_WARM"
        if [ "$QUICK" != 1 ]; then
            scenario lease-keepalive-keys "$rep" "${TWO[@]}" -- lease-keepalive --keys --leases "$L_KA" --connections 4 \
                --window 128 --secs "$L_KA_SECS" --warmup-secs "$L_KA_WARM"
        fi
        scenario lease-expiry "$rep" "${TWO[@]}" -- lease-expiry --leases "$L_EXP" --ttl "$L_EXP_TTL" --put-clients 16 \
            --idle-secs "$L_IDLE" --max-wait-secs 120
        scenario lease-memory "$rep" "${TWO[@]}" -- lease-memory --leases "$L_MEM"
    fi
done

# --- the report -----------------------------------------------------------------
mkdir -p "$OUT_DIR"
COMMAND="scripts/compare-etcd.sh"
[ "$QUICK" = 1 ] && COMMAND="QUICK=1 $COMMAND"
"$BENCH_BIN" report --runs "$RUNS" --out-dir "$OUT_DIR" --command "$COMMAND" \
    --date "$DATE" --source "$SOURCE" --script-seconds "$(($(date +%s) - START_S))" --build-seconds "$BUILD_S" \
    --data-root "$WORK"
log "done in $(($(date +%s) - START_S)) s; see $OUT_DIR/compare-etcd.md"
