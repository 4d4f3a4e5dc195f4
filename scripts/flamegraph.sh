#!/usr/bin/env bash
# Profile the running gateway under a load scenario and render an SVG flamegraph.
#
#   scripts/flamegraph.sh [SCENARIO] [--seconds N] [--target gateway|mock]
#
# Starts shardgate-mock (core LOAD_CORE) and the gateway (one shard, core GW_CORE), drives the
# scenario (default: saturation) with shardgate-loadtest, records the gateway with `perf record
# -g` for N seconds (default 10), and folds the stacks with inferno into an SVG. Installs perf
# (Debian linux-perf) and inferno (crates.io) when missing. When perf cannot read hardware
# counters here (VMs often cannot), it samples the software cpu-clock instead and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=saturation
SECONDS_TO_RECORD=10
WHO=gateway
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) SECONDS_TO_RECORD=$2; shift 2 ;;
        --target) WHO=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) SCENARIO=$1; shift ;;
    esac
done
FILE=loadtest/scenarios/$SCENARIO.toml
[ -f "$FILE" ] || { echo "no scenario $FILE" >&2; exit 2; }
. scripts/lib/rig.sh

if ! command -v perf >/dev/null 2>&1 || ! perf --version >/dev/null 2>&1; then
    apt_install linux-perf
fi
export PATH=$PATH:$HOME/.cargo/bin
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "installing inferno (crates.io)..." >&2
    cargo install --quiet --locked inferno
fi

# Hardware cycles when the machine exposes them, else the software clock (always works).
EVENT=cycles
if ! perf stat -e cycles -x, true >/dev/null 2>&1 || perf stat -e cycles -x, true 2>&1 | grep -q "not supported"; then
    EVENT=cpu-clock
    echo "perf cannot read hardware counters on this machine: sampling the software cpu-clock instead" >&2
fi

cargo build --release --locked -q -p shardgate -p shardgate-loadtest
OUT=target/flamegraph/$SCENARIO-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
start_mock "$FILE" "$OUT"
start_gateway "$OUT"
case $WHO in
    gateway) TARGET_PID=$GW ;;
    mock) TARGET_PID=$MOCK ;;
    *) echo "--target gateway|mock" >&2; exit 2 ;;
esac

taskset -c "$LOAD_CORE" "$BIN/shardgate-loadtest" run "$FILE" --url "http://127.0.0.1:$GW_PORT" \
    --label gateway --quiet --json "$OUT/load.json" >"$OUT/load.txt" 2>&1 &
LOAD=$!
PIDS+=("$LOAD")
sleep 3 # past the warm-up
echo "recording $WHO (pid $TARGET_PID) for ${SECONDS_TO_RECORD}s with event $EVENT..." >&2
if ! perf record -F 997 -g -e "$EVENT" -p "$TARGET_PID" -o "$OUT/perf.data" -- sleep "$SECONDS_TO_RECORD" 2>"$OUT/perf.log"; then
    echo "perf record failed (see $OUT/perf.log); kernel.perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid)" >&2
    exit 1
fi
kill "$LOAD" 2>/dev/null || true
perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT/stacks.folded"
inferno-flamegraph --title "shardgate $WHO: $SCENARIO ($EVENT)" <"$OUT/stacks.folded" >"$OUT/flamegraph.svg"
echo "flamegraph: $OUT/flamegraph.svg"
