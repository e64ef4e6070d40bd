# Shared by the benchmark scripts (sourced, not run): what a run measured, and
# stopping the one server a script started.

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

# stop_server: stops the server in SERVER_PID (TERM, then KILL after 10 s) and
# removes its data directory SERVER_DATA; both are cleared.
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
