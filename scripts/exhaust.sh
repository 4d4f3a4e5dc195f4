#!/usr/bin/env bash
# Connection exhaustion and slowloris on loopback (issue 10): the gateway in front of
# shardgate-mock, attacked by silent and slowloris connections while a normal client is
# measured alongside; prints the report (errors, p99 vs baseline, the gateway's fds and RSS).
#
#   scripts/exhaust.sh [--short] [--against REV] [-- EXTRA shardgate-exhaust FLAGS]
#
# Default: the issue's figures: 5,000 silent + 2,000 slowloris connections (one header byte
# every 5 s, reopened when closed), a normal client at 50 req/s: 10 s alone, then 60 s under
# attack. --short: 300 silent + 100 slowloris, 5 s alone, 10 s under attack.
# --against REV runs the shardgate of an earlier commit instead (built once, in a worktree
# under target/against/, as scripts/loadtest.sh does).
# Gateway: tuning/dev-2core.toml (the 2-core profile: one shard on core 1, 4,096 connections
# per shard), default header (10 s) and idle (60 s) timeouts. The mock and the harness run
# on core 0. Report and JSON are kept in target/exhaust/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
SHORT=0
AGAINST=
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --short) SHORT=1; shift ;;
        --against) AGAINST=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) usage ;;
    esac
done

# Ports of their own, so a scripts/loadtest.sh run beside this one is not disturbed.
MOCK_PORT=${MOCK_PORT:-19390}
GW_PORT=${GW_PORT:-19380}
TUNING=tuning/dev-2core.toml
. scripts/lib/rig.sh

for port in "$MOCK_PORT" "$GW_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "something already listens on 127.0.0.1:$port (set MOCK_PORT/GW_PORT)" >&2
        exit 1
    fi
done

cargo build --release --locked -q -p shardgate -p shardgate-loadtest
GW_BIN=$BIN/shardgate
LABEL=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src 2>/dev/null || LABEL=$LABEL-dirty
if [ -n "$AGAINST" ]; then
    REV=$(git rev-parse --short "$AGAINST^{commit}")
    TREE=target/against/$REV
    [ -d "$TREE" ] || git worktree add -q --detach "$TREE" "$REV"
    echo "building the shardgate of $REV in $TREE..." >&2
    (cd "$TREE" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked -q -p shardgate)
    GW_BIN=target/against/target/release/shardgate
    LABEL=$REV
fi

# The harness holds every attacking socket; the gateway up to its cap plus its own.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NEED=$((5000 + 2000 + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED" ]; then
    echo "the open-file limit is $(ulimit -n) and cannot be raised to $NEED: raise the hard limit (ulimit -Hn) first" >&2
    exit 1
fi

OUT=target/exhaust/$LABEL-$(date -u +%Y%m%dT%H%M%SZ)$([ $SHORT = 1 ] && echo -short || true)
mkdir -p "$OUT"

taskset -c "$LOAD_CORE" "$BIN/shardgate-mock" --listen "127.0.0.1:$MOCK_PORT" >"$OUT/mock.log" 2>&1 &
MOCK=$!
PIDS+=("$MOCK")
wait_port "$MOCK_PORT"

# The default timeouts (src/config/raw.rs DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS),
# written out so the run's config says what it measured.
sed -e "s/127.0.0.1:8080/127.0.0.1:$GW_PORT/" -e "s/127.0.0.1:9090/127.0.0.1:$MOCK_PORT/" \
    -e "s/^listen = \"127.0.0.1:$GW_PORT\"$/&\nheader_timeout_ms = 10000\nidle_timeout_ms = 60000/" \
    config/mock-upstream.toml >"$OUT/gateway.toml"
grep -q '^idle_timeout_ms = 60000' "$OUT/gateway.toml"
RUST_LOG=warn "$GW_BIN" serve --config "$OUT/gateway.toml" --tuning "$TUNING" \
    >"$OUT/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
wait_port "$GW_PORT"

if [ $SHORT = 1 ]; then
    FIGURES=(--silent 300 --slowloris 100 --warmup-s 1 --baseline-s 5 --seconds 10 --settle-s 15)
else
    FIGURES=(--silent 5000 --slowloris 2000 --byte-every-ms 5000 --ramp-ms 5000 --rate 50
             --warmup-s 2 --baseline-s 10 --seconds 60 --settle-s 30)
fi
echo "exhaust ($LABEL): gateway PID $GW on core $GW_CORE ($TUNING), mock + harness on core $LOAD_CORE; output in $OUT" >&2
STATUS=0
taskset -c "$LOAD_CORE" "$BIN/shardgate-exhaust" --target "127.0.0.1:$GW_PORT" --pid "$GW" \
    "${FIGURES[@]}" --json "$OUT/report.json" --check "${EXTRA[@]}" | tee "$OUT/report.txt" \
    || STATUS=$?
# What the gateway still holds once the harness is done: client or upstream sockets.
if command -v ss >/dev/null 2>&1 && kill -0 "$GW" 2>/dev/null; then
    ss -tanpH 2>/dev/null | grep "pid=$GW," >"$OUT/gateway-sockets.txt" || true
    DOWN=$(awk -v p=":$GW_PORT" '$1 != "LISTEN" && $4 ~ p"$"' "$OUT/gateway-sockets.txt" | wc -l)
    UP=$(awk -v p=":$MOCK_PORT" '$5 ~ p"$"' "$OUT/gateway-sockets.txt" | wc -l)
    echo "gateway sockets after the run: $DOWN to clients, $UP to the mock ($OUT/gateway-sockets.txt)" \
        | tee -a "$OUT/report.txt"
fi
if ! kill -0 "$GW" 2>/dev/null; then
    echo "the gateway exited during the run; its log: $OUT/gateway.log" >&2
    STATUS=1
fi
stop "$GW"
stop "$MOCK"
echo "report: $OUT/report.txt · JSON: $OUT/report.json" >&2
exit "$STATUS"
