#!/usr/bin/env bash
# A 3-member etcd 3.4 cluster on loopback, for tests and benchmarks of `argus mirror`.
#
#   scripts/etcd-cluster.sh start DIR    # start 3 members under DIR, wait until healthy
#   scripts/etcd-cluster.sh stop DIR     # stop the members started under DIR
#   scripts/etcd-cluster.sh status DIR   # one line per member: pid, client URL, health
#
# `start` bootstraps a fresh cluster statically (--initial-cluster, state new, a
# token unique to this start) with small timeouts (heartbeat 50 ms, election
# 500 ms), every member on 127.0.0.1 only, in fresh directories DIR/member-0..2
# (any left by an earlier start under DIR are removed first: they are this
# script's). It returns once /health of all three members answers true (which in
# etcd 3.4 means they have a leader), and writes:
#
#   DIR/endpoints             one line: the client URLs, comma-separated, e.g.
#                             http://127.0.0.1:21000,http://127.0.0.1:21002,http://127.0.0.1:21004
#                             (what `argus mirror --upstream` and `etcdctl --endpoints` take)
#   DIR/pids                  the members' process ids, one a line, member 0 first
#   DIR/member-N/etcd.log     member N's log;  DIR/member-N/data: its data directory
#
# `/metrics` of each member is served on its client URL. `stop` sends SIGTERM to the
# pids in DIR/pids (only those that are still an etcd of this DIR: a pid reused by
# another process is left alone), SIGKILL after 10 s, and removes DIR/pids; the data
# and logs stay for inspection (remove DIR when done).
#
# Ports: member N listens for clients on BASE+2N and for peers on BASE+2N+1. Without
# BASE_PORT, BASE is random in 10000..31900 (ports above 32768 collide with outgoing
# connections), checked free with `ss`, and a start that loses a port race is
# retried with another BASE (3 attempts); with BASE_PORT it is used as given.
#
# Environment: BASE_PORT, ETCD (the etcd binary; default `etcd` on PATH),
# ETCD_EXTRA_ARGS (more flags for every member, word-split, e.g.
# "--quota-backend-bytes 8589934592"), START_TIMEOUT (seconds to wait for health; 30).
set -euo pipefail

MEMBERS=3
ETCD="${ETCD:-etcd}"
START_TIMEOUT="${START_TIMEOUT:-30}"

usage() {
    sed -n '2,6p' "$0" >&2
    exit 2
}

die() {
    echo "etcd-cluster: $*" >&2
    exit 1
}

[ $# -eq 2 ] || usage
CMD="$1"
DIR="$(realpath -m "$2")"

# Whether pid $1 is a running etcd whose data directory is under DIR.
ours() {
    local pid="$1" cmdline
    [ -r "/proc/$pid/cmdline" ] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    case "$cmdline" in
        *"--data-dir $DIR/member-"*) return 0 ;;
        *) return 1 ;;
    esac
}

# Whether no socket of any state (listening, connected, TIME_WAIT) uses port $1.
port_free() {
    [ -z "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]
}

stop_pids() {
    local pids=("$@") pid alive deadline
    for pid in "${pids[@]}"; do
        if ours "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    deadline=$((SECONDS + 10))
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            if ours "$pid"; then alive+=("$pid"); fi
        done
        [ ${#alive[@]} -gt 0 ] || break
        if [ "$SECONDS" -ge "$deadline" ]; then
            for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
}

healthy() {
    curl -fsS --max-time 2 "$1/health" 2>/dev/null | grep -q '"health":"true"'
}

# One attempt at starting the cluster on ports BASE..BASE+5; 0 when healthy.
start_on() {
    local base="$1" token i cluster="" pids=() urls=() deadline
    token="argus-$$-$RANDOM$RANDOM"
    for ((i = 0; i < MEMBERS; i++)); do
        cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 2 * i + 1))"
    done
    for ((i = 0; i < MEMBERS; i++)); do
        local m="$DIR/member-$i" c="http://127.0.0.1:$((base + 2 * i))" p="http://127.0.0.1:$((base + 2 * i + 1))"
        rm -rf "$m"
        mkdir -p "$m"
        # shellcheck disable=SC2086 # ETCD_EXTRA_ARGS is word-split on purpose
        nohup "$ETCD" --name "m$i" --data-dir "$m/data" \
            --listen-client-urls "$c" --advertise-client-urls "$c" \
            --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$token" \
            --heartbeat-interval 50 --election-timeout 500 \
            ${ETCD_EXTRA_ARGS:-} </dev/null >"$m/etcd.log" 2>&1 &
        pids+=("$!")
        urls+=("$c")
    done
    printf '%s\n' "${pids[@]}" >"$DIR/pids"
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        local up=0
        for ((i = 0; i < MEMBERS; i++)); do
            if ! kill -0 "${pids[$i]}" 2>/dev/null; then
                echo "etcd-cluster: member $i exited on ports $base..$((base + 5)); its log ends:" >&2
                tail -n 5 "$DIR/member-$i/etcd.log" >&2 || true
                stop_pids "${pids[@]}"
                rm -f "$DIR/pids"
                return 1
            fi
            if healthy "${urls[$i]}"; then up=$((up + 1)); fi
        done
        if [ "$up" -eq "$MEMBERS" ]; then
            (
                IFS=,
                echo "${urls[*]}"
            ) >"$DIR/endpoints"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "etcd-cluster: the members were not healthy within ${START_TIMEOUT}s" >&2
            stop_pids "${pids[@]}"
            rm -f "$DIR/pids"
            return 1
        fi
        sleep 0.1
    done
}

case "$CMD" in
    start)
        command -v "$ETCD" >/dev/null || die "no etcd binary ('$ETCD'); install etcd-server 3.4 or set ETCD"
        command -v curl >/dev/null || die "curl is needed"
        mkdir -p "$DIR"
        if [ -f "$DIR/pids" ]; then
            while read -r pid; do
                if [ -n "$pid" ] && ours "$pid"; then die "a cluster started under $DIR is running (pid $pid); stop it first"; fi
            done <"$DIR/pids"
        fi
        rm -f "$DIR/endpoints" "$DIR/pids"
        if [ -n "${BASE_PORT:-}" ]; then
            [ "$BASE_PORT" -ge 1024 ] && [ "$((BASE_PORT + 5))" -lt 65536 ] || die "BASE_PORT $BASE_PORT out of range"
            start_on "$BASE_PORT" || die "could not start the cluster on BASE_PORT=$BASE_PORT"
        else
            started=0
            for _attempt in 1 2 3; do
                base=$((10000 + (RANDOM * 32768 + RANDOM) % 21900))
                free=1
                for ((p = base; p < base + 2 * MEMBERS; p++)); do
                    if ! port_free "$p"; then free=0; fi
                done
                [ "$free" -eq 1 ] || continue
                if start_on "$base"; then
                    started=1
                    break
                fi
            done
            [ "$started" -eq 1 ] || die "could not start the cluster (3 attempts)"
        fi
        echo "etcd-cluster: 3 members healthy: $(cat "$DIR/endpoints") (pids $(paste -sd' ' "$DIR/pids"))" >&2
        ;;
    stop)
        [ -f "$DIR/pids" ] || die "no $DIR/pids: nothing started under $DIR"
        mapfile -t pids <"$DIR/pids"
        stop_pids "${pids[@]}"
        rm -f "$DIR/pids"
        ;;
    status)
        [ -f "$DIR/pids" ] && [ -f "$DIR/endpoints" ] || die "no cluster started under $DIR"
        mapfile -t pids <"$DIR/pids"
        IFS=, read -r -a urls <"$DIR/endpoints"
        for ((i = 0; i < MEMBERS; i++)); do
            state="down"
            if ours "${pids[$i]}"; then
                if healthy "${urls[$i]}"; then state="healthy"; else state="unhealthy"; fi
            fi
            echo "member $i pid ${pids[$i]} ${urls[$i]} $state"
        done
        ;;
    *)
        usage
        ;;
esac
