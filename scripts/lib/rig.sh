# The load-test rig shared by scripts/loadtest.sh and scripts/flamegraph.sh (sourced, not run):
# cores and ports, the processes we start (stopped by PID on exit), the mock and the gateway.
#   GW_CORE (1) runs the gateway or nginx; LOAD_CORE (0) the mock and the load generator.
#   MOCK_PORT (19090), GW_PORT (19080), NGINX_PORT (19081): loopback only.

CORES=$(nproc)
GW_CORE=${GW_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
if [ "$CORES" -lt 2 ]; then GW_CORE=0; LOAD_CORE=0; fi
MOCK_PORT=${MOCK_PORT:-19090}
NGINX_PORT=${NGINX_PORT:-19081}
GW_PORT=${GW_PORT:-19080}
BIN=target/release
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi

PIDS=()
rig_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap rig_cleanup EXIT

# Install Debian packages that are missing (apt-get needs fresh lists on a new machine).
apt_install() {
    echo "installing $* (Debian)..." >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_mock SCENARIO_FILE OUT_DIR: shardgate-mock with the scenario's latency model; sets MOCK.
start_mock() {
    local args
    read -r -a args <<<"$("$BIN/shardgate-loadtest" mock-args "$1")"
    taskset -c "$LOAD_CORE" "$BIN/shardgate-mock" --listen "127.0.0.1:$MOCK_PORT" "${args[@]}" \
        >"$2/mock.log" 2>&1 &
    MOCK=$!
    PIDS+=("$MOCK")
    wait_port "$MOCK_PORT"
}

# start_gateway OUT_DIR [BINARY] [CONFIG] [NAME]: the gateway in front of the mock, with the
# tuning profile GW_TUNING (default tuning/loadtest-1core.toml: one shard; its core 1 becomes
# GW_CORE), with CONFIG (default config/mock-upstream.toml); writes OUT_DIR/NAME.toml,
# NAME.tuning.toml and NAME.log (NAME defaults to gateway); sets GW.
start_gateway() {
    local name=${4:-gateway}
    sed -e "s/127.0.0.1:8080/127.0.0.1:$GW_PORT/" -e "s/127.0.0.1:9090/127.0.0.1:$MOCK_PORT/" \
        "${3:-config/mock-upstream.toml}" >"$1/$name.toml"
    sed -e "s/^cores = \\[1\\]/cores = [$GW_CORE]/" -e "s/^core = 1\$/core = $GW_CORE/" \
        "${GW_TUNING:-tuning/loadtest-1core.toml}" >"$1/$name.tuning.toml"
    RUST_LOG=warn taskset -c "$GW_CORE" "${2:-$BIN/shardgate}" serve --config "$1/$name.toml" \
        --tuning "$1/$name.tuning.toml" >"$1/$name.log" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    wait_port "$GW_PORT"
}

# keep_metrics FILE: the running gateway's /metrics (its counters for the run just done).
keep_metrics() {
    curl -sf "http://127.0.0.1:$GW_PORT/metrics" >"$1" 2>/dev/null || echo "no /metrics" >"$1"
}
