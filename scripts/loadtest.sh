#!/usr/bin/env bash
# Run a load scenario three ways on loopback, side by side: straight at the mock ("direct"),
# through nginx proxy_pass ("nginx"), and through shardgate ("gateway").
#
#   scripts/loadtest.sh SCENARIO [--scale F] [--targets direct,nginx,gateway] [--against REV]
#                                [--config FILE] [--before-config FILE] [--tuning FILE]
#                                [--runs N [--max-cpu-ratio X]]
#   scripts/loadtest.sh compare SCENARIO REV [--runs N] [...]   (= SCENARIO --against REV --runs 5)
#
# --targets may also name `static`: nginx answering a fixed chat completion itself, the floor of
# any server on this machine (beside cache hits, which need no upstream either).
# --against REV also runs the shardgate of an earlier commit (built once, in a worktree under
# target/against/) as target "before", on the same mock, and prints gateway/before ratios.
# --runs N (with --against) is the regression guard: N rounds on one mock, each running both
# builds, the order alternating (before→gateway, gateway→before, ...) to cancel drift; then
# `shardgate-loadtest ratios` prints per step and overall the median gateway/before ratio of
# req/s, CPU per request, p50 and p99 with its min–max spread. --max-cpu-ratio X makes the
# script exit 1 when the overall median CPU ratio exceeds X. --targets then names the references
# that also run in every round (direct, nginx; default neither), each with its gateway/TARGET
# median ratios (the columns of the README's Benchmarks table).
# --config FILE runs target "gateway" with FILE instead of config/mock-upstream.toml ("before"
# keeps that one), e.g. config/mock-two-deployments.toml for the cost of routing;
# --before-config FILE gives "before" its own (the same FILE: a change's cost with a feature on).
# --tuning FILE runs both builds with that profile instead of tuning/loadtest-1core.toml (e.g.
# tuning/loadtest-2shard.toml: two shards on the gateway's core, for the cross-shard hop).
# Each gateway run keeps its /metrics at the end beside its JSON (TARGET.metrics).
# One gateway shard (and one nginx worker) on GW_CORE; the mock and the load generator on
# LOAD_CORE. Prints the table with ratios, appends CSV rows to tuning/results/loadtest.csv and
# writes the plot to tuning/results/SCENARIO.svg (RESULTS_DIR overrides the folder). Runs are
# kept in target/loadtest/ (with --runs: round-K/TARGET.json and ratios.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
SCALE=1
TARGETS=direct,nginx,gateway
AGAINST=
GW_CONFIG=
BEFORE_CONFIG=
ROUNDS=
MAX_CPU=
TARGETS_GIVEN=
if [ "$1" = compare ]; then
    # The regression guard by name: this build against REV, alternating rounds (5 unless --runs).
    [ $# -ge 3 ] || usage
    SCENARIO=$2 AGAINST=$3 ROUNDS=5
    shift 3
else
    SCENARIO=$1
    shift
fi
while [ $# -gt 0 ]; do
    case $1 in
        --scale) SCALE=$2; shift 2 ;;
        --targets) TARGETS=$2; TARGETS_GIVEN=1; shift 2 ;;
        --against) AGAINST=$2; shift 2 ;;
        --config) GW_CONFIG=$2; shift 2 ;;
        --before-config) BEFORE_CONFIG=$2; shift 2 ;;
        --tuning) GW_TUNING=$2; shift 2 ;;
        --runs) ROUNDS=$2; shift 2 ;;
        --max-cpu-ratio) MAX_CPU=$2; shift 2 ;;
        *) usage ;;
    esac
done
if [ -n "$ROUNDS" ]; then
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--runs needs a number of rounds (1 or more)" >&2; exit 2; }
    [ -n "$AGAINST" ] || { echo "--runs needs --against REV (the build to compare with)" >&2; exit 2; }
    [ -n "$TARGETS_GIVEN" ] || TARGETS=
else
    [ -z "$MAX_CPU" ] || { echo "--max-cpu-ratio needs --runs N" >&2; exit 2; }
fi
[ -z "$AGAINST" ] || TARGETS=$TARGETS,before
FILE=loadtest/scenarios/$SCENARIO.toml
STATIC_ANSWER='{"id":"chatcmpl-static","object":"chat.completion","created":0,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"A fixed answer from nginx, the size of a short completion."},"finish_reason":"stop"}],"usage":{"prompt_tokens":230,"completion_tokens":12,"total_tokens":242}}'
[ -f "$FILE" ] || { echo "no scenario $FILE (have: $(ls loadtest/scenarios | sed 's/.toml//' | tr '\n' ' '))" >&2; exit 2; }

. scripts/lib/rig.sh
if [[ $TARGETS == *nginx* ]] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    apt_install nginx
fi
export PATH=$PATH:/usr/sbin

cargo build --release --locked -q -p shardgate -p shardgate-loadtest
if [ -n "$AGAINST" ]; then
    REV=$(git rev-parse --short "$AGAINST^{commit}")
    TREE=target/against/$REV
    [ -d "$TREE" ] || git worktree add -q --detach "$TREE" "$REV"
    echo "building the shardgate of $REV in $TREE..." >&2
    (cd "$TREE" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked -q -p shardgate)
    BEFORE_BIN=target/against/target/release/shardgate
fi
OUT=target/loadtest/$SCENARIO-$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS_DIR:-tuning/results}
mkdir -p "$OUT" "$RESULTS"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_mock "$FILE" "$OUT"

load() { # label url pids [dir]
    local dir=${4:-$OUT}
    taskset -c "$LOAD_CORE" "$BIN/shardgate-loadtest" run "$FILE" --url "$2" --label "$1" \
        --pid "$3" --scale "$SCALE" --json "$dir/$1.json" --quiet >"$dir/$1.txt"
    echo "  $1 done" >&2
}

# run_TARGET DIR: one run of direct, nginx, before or gateway on the mock; JSON in DIR/TARGET.json.
run_direct() {
    load direct "http://127.0.0.1:$MOCK_PORT" "$MOCK" "$1"
}
# start_nginx NAME LOCATION: one nginx worker on GW_CORE with this `location /` body; sets NGINX.
start_nginx() {
    mkdir -p "$OUT/$1"
    cat >"$OUT/$1/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 1$(printf '%*s' "$GW_CORE" '' | tr ' ' 0);
daemon off;
pid $PWD/$OUT/$1/nginx.pid;
error_log $PWD/$OUT/$1/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $PWD/$OUT/$1;
    proxy_temp_path $PWD/$OUT/$1;
    client_body_buffer_size 64k;
    client_max_body_size 4m;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 1024; }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        keepalive_requests 1000000;
        location / {
$2
        }
    }
}
CONF
    nginx -c "$PWD/$OUT/$1/nginx.conf" -p "$PWD/$OUT/$1" >"$OUT/$1/stdout.log" 2>&1 &
    NGINX=$!
    PIDS+=("$NGINX")
    wait_port "$NGINX_PORT"
}
run_nginx() {
    start_nginx nginx '            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;'
    load nginx "http://127.0.0.1:$NGINX_PORT" "$NGINX,$(pgrep -P "$NGINX" | paste -sd, -)" "$1"
    stop "$NGINX"
}
# The floor of any server on this machine: nginx answering a fixed chat completion itself (no
# upstream, no parsing), e.g. beside cache hits (`--targets static,nginx`).
run_static() {
    start_nginx static "            default_type application/json;
            return 200 '$STATIC_ANSWER';"
    load static "http://127.0.0.1:$NGINX_PORT" "$NGINX,$(pgrep -P "$NGINX" | paste -sd, -)" "$1"
    stop "$NGINX"
}
run_before() {
    start_gateway "$1" "$BEFORE_BIN" "$BEFORE_CONFIG" before
    load before "http://127.0.0.1:$GW_PORT" "$GW" "$1"
    keep_metrics "$1/before.metrics"
    stop "$GW"
}
run_gateway() {
    start_gateway "$1" "" "$GW_CONFIG"
    echo "  gateway RSS idle: $(awk '/VmRSS/ {print $2, $3}' "/proc/$GW/status")" >&2
    load gateway "http://127.0.0.1:$GW_PORT" "$GW" "$1"
    keep_metrics "$1/gateway.metrics"
    stop "$GW"
}

echo "scenario $SCENARIO (scale $SCALE): gateway/nginx on core $GW_CORE, mock + generator on core $LOAD_CORE; output in $OUT" >&2
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- . ':!tuning/results' 2>/dev/null || COMMIT=$COMMIT-dirty
MACHINE="$(hostname) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ${CORES} cores"
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
REFS=() # the reference targets asked for, in run order
for t in direct static nginx; do
    if [[ $TARGETS == *$t* ]]; then REFS+=("$t"); fi
done

if [ -n "$ROUNDS" ]; then
    ALL=()
    for k in $(seq 1 "$ROUNDS"); do
        DIR=$OUT/round-$k
        mkdir -p "$DIR"
        if [ $((k % 2)) = 1 ]; then ORDER=(before gateway); else ORDER=(gateway before); fi
        echo "round $k/$ROUNDS: ${REFS[*]} ${ORDER[*]}" >&2
        for t in "${REFS[@]}" "${ORDER[@]}"; do
            "run_$t" "$DIR"
            ALL+=("$DIR/$t.json")
        done
        ROUND=()
        for t in "${REFS[@]}" before gateway; do ROUND+=("$DIR/$t.json"); done
        "$BIN/shardgate-loadtest" compare "${ROUND[@]}" --csv "$RESULTS/loadtest.csv" \
            --commit "$COMMIT" --date "$(now)" --machine "$MACHINE" >"$DIR/compare.txt"
        [ "$k" != 1 ] || FIRST=("${ROUND[@]}")
    done
    "$BIN/shardgate-loadtest" plot "$RESULTS/$SCENARIO.svg" "${FIRST[@]}"
    echo "plot (round 1): $RESULTS/$SCENARIO.svg · CSV: $RESULTS/loadtest.csv · runs: $OUT" >&2
    GUARD=()
    [ -z "$MAX_CPU" ] || GUARD=(--max-cpu-ratio "$MAX_CPU")
    # gateway against each reference, then against the earlier build, with the guard, last.
    {
        echo "gateway = $COMMIT, before = $REV$([ -z "$GW_CONFIG" ] || echo " (gateway with $GW_CONFIG)"), scale $SCALE, $(now)"
        echo "machine: $MACHINE; gateway on core $GW_CORE, mock + generator on core $LOAD_CORE"
        for t in "${REFS[@]}"; do
            echo
            RUST_BACKTRACE=0 "$BIN/shardgate-loadtest" ratios "${ALL[@]}" --base "$t"
        done
        echo
        RUST_BACKTRACE=0 "$BIN/shardgate-loadtest" ratios "${ALL[@]}" "${GUARD[@]}"
    } | tee "$OUT/ratios.txt"
    exit "${PIPESTATUS[0]}"
fi

RUNS=()
for t in "${REFS[@]}"; do
    "run_$t" "$OUT"
    RUNS+=("$OUT/$t.json")
done
for t in before gateway; do
    if [[ $TARGETS == *$t* ]]; then
        "run_$t" "$OUT"
        RUNS+=("$OUT/$t.json")
    fi
done

"$BIN/shardgate-loadtest" compare "${RUNS[@]}" --csv "$RESULTS/loadtest.csv" \
    --commit "$COMMIT" --date "$(now)" --machine "$MACHINE" | tee "$OUT/compare.txt"
"$BIN/shardgate-loadtest" plot "$RESULTS/$SCENARIO.svg" "${RUNS[@]}"
echo "plot: $RESULTS/$SCENARIO.svg · CSV: $RESULTS/loadtest.csv · runs: $OUT" >&2
