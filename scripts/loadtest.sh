#!/usr/bin/env bash
# Run a load scenario three ways on loopback, side by side: straight at the mock ("direct"),
# through nginx proxy_pass ("nginx"), and through shardgate ("gateway").
#
#   scripts/loadtest.sh SCENARIO [--scale F] [--targets direct,nginx,gateway] [--against REV]
#                                [--config FILE]
#
# --against REV also runs the shardgate of an earlier commit (built once, in a worktree under
# target/against/) as target "before", on the same mock, and prints gateway/before ratios.
# --config FILE runs target "gateway" with FILE instead of config/mock-upstream.toml ("before"
# keeps that one), e.g. config/mock-two-deployments.toml for the cost of routing.
# One gateway shard (and one nginx worker) on GW_CORE; the mock and the load generator on
# LOAD_CORE. Prints the table with ratios, appends CSV rows to tuning/results/loadtest.csv and
# writes the plot to tuning/results/SCENARIO.svg (RESULTS_DIR overrides the folder). Runs are
# kept in target/loadtest/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
SCENARIO=$1
shift
SCALE=1
TARGETS=direct,nginx,gateway
AGAINST=
GW_CONFIG=
while [ $# -gt 0 ]; do
    case $1 in
        --scale) SCALE=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --against) AGAINST=$2; shift 2 ;;
        --config) GW_CONFIG=$2; shift 2 ;;
        *) usage ;;
    esac
done
[ -z "$AGAINST" ] || TARGETS=$TARGETS,before
FILE=loadtest/scenarios/$SCENARIO.toml
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

load() { # label url pids
    taskset -c "$LOAD_CORE" "$BIN/shardgate-loadtest" run "$FILE" --url "$2" --label "$1" \
        --pid "$3" --scale "$SCALE" --json "$OUT/$1.json" --quiet >"$OUT/$1.txt"
    echo "  $1 done" >&2
}

RUNS=()
echo "scenario $SCENARIO (scale $SCALE): gateway/nginx on core $GW_CORE, mock + generator on core $LOAD_CORE; output in $OUT" >&2

if [[ $TARGETS == *direct* ]]; then
    load direct "http://127.0.0.1:$MOCK_PORT" "$MOCK"
    RUNS+=("$OUT/direct.json")
fi

if [[ $TARGETS == *nginx* ]]; then
    mkdir -p "$OUT/nginx"
    cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity $(printf '1%0*d' "$GW_CORE" 0);
daemon off;
pid $PWD/$OUT/nginx/nginx.pid;
error_log $PWD/$OUT/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $PWD/$OUT/nginx;
    proxy_temp_path $PWD/$OUT/nginx;
    client_body_buffer_size 64k;
    client_max_body_size 4m;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 1024; }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
    nginx -c "$PWD/$OUT/nginx/nginx.conf" -p "$PWD/$OUT/nginx" >"$OUT/nginx/stdout.log" 2>&1 &
    NGINX=$!
    PIDS+=("$NGINX")
    wait_port "$NGINX_PORT"
    WORKERS=$(pgrep -P "$NGINX" | paste -sd, -)
    load nginx "http://127.0.0.1:$NGINX_PORT" "$NGINX,$WORKERS"
    stop "$NGINX"
    RUNS+=("$OUT/nginx.json")
fi

if [[ $TARGETS == *before* ]]; then
    start_gateway "$OUT" "$BEFORE_BIN"
    load before "http://127.0.0.1:$GW_PORT" "$GW"
    stop "$GW"
    RUNS+=("$OUT/before.json")
fi

if [[ $TARGETS == *gateway* ]]; then
    start_gateway "$OUT" "" "$GW_CONFIG"
    echo "  gateway RSS idle: $(awk '/VmRSS/ {print $2, $3}' "/proc/$GW/status")" >&2
    load gateway "http://127.0.0.1:$GW_PORT" "$GW"
    stop "$GW"
    RUNS+=("$OUT/gateway.json")
fi

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- . ':!tuning/results' 2>/dev/null || COMMIT=$COMMIT-dirty
MACHINE="$(hostname) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ${CORES} cores"
"$BIN/shardgate-loadtest" compare "${RUNS[@]}" --csv "$RESULTS/loadtest.csv" \
    --commit "$COMMIT" --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --machine "$MACHINE" | tee "$OUT/compare.txt"
"$BIN/shardgate-loadtest" plot "$RESULTS/$SCENARIO.svg" "${RUNS[@]}"
echo "plot: $RESULTS/$SCENARIO.svg · CSV: $RESULTS/loadtest.csv · runs: $OUT" >&2
