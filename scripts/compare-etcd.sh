#!/usr/bin/env bash
# Argus and etcd side by side: the same load generator (argus-bench, one tonic
# client for both) runs the same matrix against etcd and Argus on loopback, each
# run on a freshly started server with a fresh data directory, the systems
# alternating, the whole matrix twice. Writes results/compare-etcd.json,
# results/compare-etcd.md and results/compare-etcd-*.svg from that one run; never
# edit those by hand: rerun this script.
#
#   scripts/compare-etcd.sh              # full matrix, 70 runs, and the mirror section
#                                        # (24 runs): an estimated 13 minutes on 2 cores
#                                        # with the build (well under 20), about 3.5 of
#                                        # them the mirror section
#   QUICK=1 scripts/compare-etcd.sh      # tiny sizes, the lease scenarios once: a smoke
#                                        # test (2-3 minutes after the build, ~20 s of
#                                        # it the leases, ~35 s the mirror section)
#
# Durability is matched: etcd fsyncs every commit, so Argus runs with
# `--fsync always`; `--fsync batch` is shown beside it in the scenarios bounded by
# latency or put throughput. For every Argus run the load generator also splits
# the server's CPU by thread name (engine, wire, kv, other; see
# bench-harness/src/loadgen/stats.rs).
#
# The mirror section (issue 12) starts a 3-member etcd cluster on loopback and two
# `argus mirror`s in front of it, once, and measures the same watchers on the
# mirrors and on the members directly (fan-out: the members' CPU and the watchers
# they hold; event latency at 200 puts/s; catch-up over 100k revisions; the added
# hop with one watcher): about 4 minutes on 2 cores (under 1 in QUICK mode).
#
# Environment: REPS (2), QUICK (0), OUT_DIR (results), ETCD_PORT (23790),
# ETCD_PEER_PORT (23800), ARGUS_PORT (23791), ARGUS_BENCH_DIR (where data
# directories go; default the temporary directory); the mirror section:
# MIRROR (1; 0 skips it), MIRROR_ONLY (0; 1 runs only it), CLUSTER_BASE_PORT
# (23810: member i's client port is base + 2i, its peer port base + 2i + 1),
# MIRROR_BASE_PORT (23820: mirror i's gRPC port is base + 2i, its /metrics base + 2i + 1).
# Only the processes this script starts are stopped, by pid (trap EXIT).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

START_S=$(date +%s)
REPS="${REPS:-2}"
QUICK="${QUICK:-0}"
OUT_DIR="${OUT_DIR:-results}"
ETCD_PORT="${ETCD_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
ARGUS_PORT="${ARGUS_PORT:-23791}"
MIRROR="${MIRROR:-1}"
MIRROR_ONLY="${MIRROR_ONLY:-0}"
CLUSTER_BASE_PORT="${CLUSTER_BASE_PORT:-23810}"
MIRROR_BASE_PORT="${MIRROR_BASE_PORT:-23820}"
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

PORTS=("$ETCD_PORT" "$ETCD_PEER_PORT" "$ARGUS_PORT")
if [ "$MIRROR" != 0 ]; then
    for i in 0 1 2 3 4 5; do PORTS+=($((CLUSTER_BASE_PORT + i))); done
    for i in 0 1 2 3; do PORTS+=($((MIRROR_BASE_PORT + i))); done
fi
for port in "${PORTS[@]}"; do
    if [ "$port" -ge 32768 ]; then
        echo "compare-etcd: port $port is not below 32768 (outgoing connections use those)" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "compare-etcd: port $port on 127.0.0.1 is in use; set ETCD_PORT / ETCD_PEER_PORT / ARGUS_PORT /" \
            "CLUSTER_BASE_PORT / MIRROR_BASE_PORT" >&2
        exit 1
    fi
done

# --- what is measured, then the release build ----------------------------------
PATHS=(engine server bench-harness Cargo.toml Cargo.lock)
SOURCE="$(measured_source "${PATHS[@]}")"
BUILD_START=$(date +%s)
log "building argus and argus-bench (release)"
build_server_and_bench
BUILD_S=$(($(date +%s) - BUILD_START))

# --- scratch space, and stopping what we started --------------------------------
make_work compare-etcd

MIRROR_PIDS=()
CLUSTER_DIR=""

cleanup() {
    stop_server
    if [ "${#MIRROR_PIDS[@]}" -gt 0 ]; then
        stop_pids "${MIRROR_PIDS[@]}"
        MIRROR_PIDS=()
    fi
    if [ -n "$CLUSTER_DIR" ]; then
        cluster_stop "$CLUSTER_DIR"
        CLUSTER_DIR=""
    fi
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
MATRIX_REPS="$REPS"
[ "$MIRROR_ONLY" = 1 ] && MATRIX_REPS=0
for rep in $(seq 1 "$MATRIX_REPS"); do
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

# --- argus mirror in front of a 3-member etcd cluster (issue 12) ------------------
# One cluster (fresh directories) and two mirrors for the whole section. The same
# watchers go either to the mirrors or to the members directly, the systems
# alternating (reversed in even repetitions); the puts always go into the cluster,
# round-robin over the members. The mirrors keep following the cluster (one
# upstream watch each) during the runs with the watchers on the members too.

# cluster_start DIR: 3 etcd members on loopback (static bootstrap, heartbeat 50 ms,
# election 500 ms), data under DIR; writes DIR/endpoints (one line, the client URLs
# comma-separated) and DIR/pids (one pid a line). Uses scripts/etcd-cluster.sh
# when the repository has it.
cluster_start() {
    local dir="$1"
    if [ -x scripts/etcd-cluster.sh ]; then
        scripts/etcd-cluster.sh start "$dir"
        return
    fi
    mkdir -p "$dir"
    : >"$dir/pids"
    local i initial="" urls=""
    for i in 0 1 2; do
        initial+="${initial:+,}m$i=http://127.0.0.1:$((CLUSTER_BASE_PORT + 2 * i + 1))"
        urls+="${urls:+,}http://127.0.0.1:$((CLUSTER_BASE_PORT + 2 * i))"
    done
    for i in 0 1 2; do
        local client="http://127.0.0.1:$((CLUSTER_BASE_PORT + 2 * i))"
        local peer="http://127.0.0.1:$((CLUSTER_BASE_PORT + 2 * i + 1))"
        "$ETCD_BIN" --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "compare-etcd-$$" \
            --heartbeat-interval 50 --election-timeout 500 \
            --logger zap --log-level error >>"$dir/m$i.log" 2>&1 &
        echo $! >>"$dir/pids"
    done
    echo "$urls" >"$dir/endpoints"
    local deadline=$(($(date +%s) + 60))
    until ETCDCTL_API=3 etcdctl --endpoints "$urls" --command-timeout 2s endpoint health >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "compare-etcd: the cluster is not healthy after 60 s; logs in $dir/m*.log:" >&2
            tail -n 5 "$dir"/m*.log >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# cluster_stop DIR: stops the members cluster_start started (by pid).
cluster_stop() {
    local dir="$1"
    if [ -x scripts/etcd-cluster.sh ]; then
        scripts/etcd-cluster.sh stop "$dir" || true
        return
    fi
    [ -f "$dir/pids" ] || return 0
    local pids
    mapfile -t pids <"$dir/pids"
    [ "${#pids[@]}" -gt 0 ] && stop_pids "${pids[@]}"
    rm -f "$dir/pids"
}

# mirror_start I: `argus mirror` number I in front of the cluster; waits for its
# "serving" line.
mirror_start() {
    local i="$1"
    local port=$((MIRROR_BASE_PORT + 2 * i)) metrics=$((MIRROR_BASE_PORT + 2 * i + 1))
    local log_file="$WORK/logs/mirror$i.log"
    "$ARGUS_BIN" mirror --upstream "$UPSTREAM" --listen "127.0.0.1:$port" --data-dir "$WORK/mirror$i" \
        --metrics-listen "127.0.0.1:$metrics" --name "mirror$i" >"$log_file" 2>&1 &
    local pid=$!
    MIRROR_PIDS+=("$pid")
    local deadline=$(($(date +%s) + 120))
    until grep -q "argus: serving etcd v3 API on" "$log_file"; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "compare-etcd: mirror $i did not start; its log:" >&2
            tail -n 20 "$log_file" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

# mrun SCENARIO SYSTEM REP SPREAD SUBCOMMAND ARGS...: one run of the mirror section.
# SYSTEM etcd: the watchers on the members; argus-mirror: on the mirrors. SPREAD
# all: over every member (mirror); one: on the first.
mrun() {
    local scenario="$1" system="$2" rep="$3" spread="$4"
    shift 4
    local eps pids
    if [ "$system" = etcd ]; then
        eps="$MEMBERS" pids="$MEMBER_PIDS"
    else
        eps="$MIRRORS" pids="$MIRROR_PIDS_CSV"
    fi
    if [ "$spread" = one ]; then
        eps="${eps%%,*}" pids="${pids%%,*}"
    fi
    local extra=()
    [ -n "$MIRROR_PIDS_CSV" ] && extra=(--mirror-pids "$MIRROR_PIDS_CSV")
    local rc=0
    "$BENCH_BIN" "$@" --watch-endpoints "$eps" --watch-pids "$pids" --members "$MEMBERS" --member-pids "$MEMBER_PIDS" \
        "${extra[@]}" --system "$system" --scenario "$scenario" --rep "$rep" --timeout 240s \
        --out "$RUNS/$scenario.$system.$rep.json" >/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        log "$system $scenario rep $rep: exit $rc (recorded in the report)"
    fi
}

# mscenario NAME REP SPREAD -- SUBCOMMAND ARGS...: etcd and the mirrors in turn
# (reversed in even repetitions; the mirrors only if this build has them).
mscenario() {
    local name="$1" rep="$2" spread="$3"
    shift 4
    local systems=(etcd)
    [ -n "$MIRRORS" ] && systems+=(argus-mirror)
    if [ $((rep % 2)) = 0 ] && [ "${#systems[@]}" = 2 ]; then
        systems=(argus-mirror etcd)
    fi
    for system in "${systems[@]}"; do
        mrun "$name" "$system" "$rep" "$spread" "$@"
    done
}

if [ "$MIRROR" != 0 ]; then
    MIRROR_START=$(date +%s)
    if [ "$QUICK" = 1 ]; then
        M_HISTORY=5000; M_CATCHUP_W=20; M_FAN_W=1000; M_FAN_STREAMS=20; M_FAN_PUTS=400; M_HOP_PUTS=200
    else
        M_HISTORY=100000; M_CATCHUP_W=100; M_FAN_W=10000; M_FAN_STREAMS=100; M_FAN_PUTS=4000; M_HOP_PUTS=1000
    fi
    log "mirror section: a 3-member etcd cluster and two argus mirrors"
    CLUSTER_DIR="$WORK/cluster"
    cluster_start "$CLUSTER_DIR"
    # The client URLs, comma- or line-separated; host:port for argus-bench.
    UPSTREAM="$(tr '\n' ',' <"$CLUSTER_DIR/endpoints" | sed 's/,,*/,/g; s/^,//; s/,$//')"
    MEMBERS="$(echo "$UPSTREAM" | sed 's#[a-z]*://##g')"
    MEMBER_PIDS="$(paste -sd, "$CLUSTER_DIR/pids")"
    MIRRORS=""
    MIRROR_PIDS_CSV=""
    if "$ARGUS_BIN" mirror --help >/dev/null 2>&1; then
        mirror_start 0
        mirror_start 1
        MIRRORS="127.0.0.1:$MIRROR_BASE_PORT,127.0.0.1:$((MIRROR_BASE_PORT + 2))"
        MIRROR_PIDS_CSV="$(IFS=,; echo "${MIRROR_PIDS[*]}")"
    else
        log "this build has no \`argus mirror\`: the etcd side of the mirror section only"
    fi
    log "cluster $MEMBERS (pids $MEMBER_PIDS), mirrors ${MIRRORS:-none}"
    # 3. Catch-up: the history is written once, first (so a watch from revision 1
    # replays it and little else); the mirrors must have applied it.
    "$BENCH_BIN" mirror-history --members "$MEMBERS" ${MIRRORS:+--wait-for "$MIRRORS"} --history "$M_HISTORY" \
        --history-file "$WORK/mirror-history.json" --timeout 240s
    for rep in $(seq 1 "$REPS"); do
        mscenario mirror-catchup "$rep" one -- mirror-catchup --history-file "$WORK/mirror-history.json" \
            --watchers "$M_CATCHUP_W" --streams 1 --connections 4 --check-watchers 2
    done
    # 1 and 2. Fan-out at 200 puts/s: the watchers over both mirrors or over the
    # three members, 100 streams over 2 connections per endpoint; watcher i on key
    # i % 10, the puts cycling over the 10 keys, so each put goes to 1,000 watchers
    # (200,000 events/s): enough fan-out that the watchers, not the puts, are what
    # the members would spend most on.
    for rep in $(seq 1 "$REPS"); do
        mscenario mirror-fanout "$rep" all -- mirror-fanout --watchers "$M_FAN_W" --streams "$M_FAN_STREAMS" \
            --connections 2 --mode keys --keys 10 --puts "$M_FAN_PUTS" --rate 200 --put-clients 16
    done
    # 4. The added hop: one watcher, on the first mirror or the first member.
    for rep in $(seq 1 "$REPS"); do
        mscenario mirror-hop "$rep" one -- mirror-fanout --watchers 1 --streams 1 --connections 1 --mode prefix \
            --keys 100 --puts "$M_HOP_PUTS" --rate 200 --put-clients 16
    done
    if [ "${#MIRROR_PIDS[@]}" -gt 0 ]; then
        stop_pids "${MIRROR_PIDS[@]}"
        MIRROR_PIDS=()
    fi
    cluster_stop "$CLUSTER_DIR"
    CLUSTER_DIR=""
    log "mirror section done in $(($(date +%s) - MIRROR_START)) s"
fi

# --- the report -----------------------------------------------------------------
mkdir -p "$OUT_DIR"
COMMAND="scripts/compare-etcd.sh"
[ "$QUICK" = 1 ] && COMMAND="QUICK=1 $COMMAND"
"$BENCH_BIN" report --runs "$RUNS" --out-dir "$OUT_DIR" --command "$COMMAND" \
    --date "$DATE" --source "$SOURCE" --script-seconds "$(($(date +%s) - START_S))" --build-seconds "$BUILD_S" \
    --data-root "$WORK"
log "done in $(($(date +%s) - START_S)) s; see $OUT_DIR/compare-etcd.md"
