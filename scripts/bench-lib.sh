# Shared by the benchmark scripts (sourced, not run): what a run measured, the
# release build of the server and the load generator, scratch space, and
# stopping the processes a script started.

# measured_source PATH...: HEAD's commit, or it with a digest of the uncommitted
# changes (and untracked files) under the PATHs, so a result says exactly which
# source it measured.
measured_source() {
    local head digest
    head="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    if git diff --quiet HEAD -- "$@" 2>/dev/null \
        && [ -z "$(git ls-files --others --exclude-standard -- "$@" 2>/dev/null)" ]; then
        echo "$head"
    else
        digest="$( { git diff HEAD -- "$@"; git ls-files -z --others --exclude-standard -- "$@" | xargs -0 -r cat; } \
            | sha256sum | cut -c1-16)"
        echo "$head + uncommitted changes to $* (content sha256 $digest)"
    fi
}

# build_server_and_bench: builds argus and argus-bench in release mode; sets
# ARGUS_BIN and BENCH_BIN.
build_server_and_bench() {
    cargo build --release -q -p argus-server -p argus-bench --bin argus --bin argus-bench
    local target="${CARGO_TARGET_DIR:-target}"
    ARGUS_BIN="$target/release/argus"
    BENCH_BIN="$target/release/argus-bench"
}

# make_work NAME: a fresh scratch directory under ARGUS_BENCH_DIR (default the
# temporary directory) with runs/ and logs/; sets WORK and RUNS, and clears
# SERVER_PID and SERVER_DATA.
make_work() {
    local base="${ARGUS_BENCH_DIR:-${TMPDIR:-/tmp}}"
    WORK="$(mktemp -d "$base/$1.XXXXXX")"
    RUNS="$WORK/runs"
    mkdir -p "$RUNS" "$WORK/logs"
    SERVER_PID=""
    SERVER_DATA=""
}

# stop_pids PID...: stops each (TERM to all, then KILL to any still there after
# 10 s) and reaps it.
stop_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# stop_server: stops the server in SERVER_PID (see stop_pids) and removes its
# data directory SERVER_DATA; both are cleared.
stop_server() {
    local pid="$SERVER_PID"
    SERVER_PID=""
    if [ -n "$pid" ]; then
        stop_pids "$pid"
    fi
    if [ -n "$SERVER_DATA" ]; then
        rm -rf "$SERVER_DATA"
        SERVER_DATA=""
    fi
}
