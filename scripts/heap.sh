#!/usr/bin/env bash
# Heap profile per concurrent slow stream: N concurrent SSE streams (20 chunks, 50 ms apart, as
# in loadtest/scenarios/streaming.toml) through one gateway shard built with dhat as its
# allocator, then where the bytes were at the peak and what was still live at the end.
#
#   scripts/heap.sh [--streams N] [--scale F] [--rev REV] [--gateway BIN]
#
# --streams N   concurrent streams (default 1000), each 20 chunks 50 ms apart: N closed-loop
#               connections for about 4 s of back-to-back streams (--scale F multiplies that
#               time); the scenario is written to the output folder.
# --rev REV     profiles the gateway of commit REV (built in a worktree under target/heap/)
#               instead of the working tree; REV must have the `dhat-heap` feature.
# --gateway BIN runs BIN (e.g. target/release/shardgate, mimalloc) instead of the dhat build:
#               RSS figures only, no profile.
# Builds the gateway with `--features dhat-heap`, and the mock and the load generator with it,
# into target/dhat (other builds are not touched), starts the mock and one gateway shard on
# loopback (scripts/lib/rig.sh), samples the gateway's VmRSS every 200 ms, drives the streams,
# reads VmRSS once they ended, sends SIGTERM to the gateway and waits for it to drain (which
# writes the profile), then prints scripts/lib/dhat_top.py's summary. dhat counts requested
# bytes, not RSS, and its own bookkeeping swells the dhat build's RSS: take RSS per stream from a
# --gateway run of the normal build. Output in target/heap/N<N>-<time>/ (dhat-heap.json opens in
# dhat's viewer, dh_view.html, from the valgrind package or the dhat crate's docs). Loopback
# ports MOCK_PORT (19290) and GW_PORT (19280); not while scripts/loadtest.sh runs (shared cores).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
N=1000
SCALE=1
GATEWAY=
REV=
while [ $# -gt 0 ]; do
    case $1 in
        --streams) N=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --rev) REV=$2; shift 2 ;;
        --gateway) GATEWAY=$2; shift 2 ;;
        *) usage ;;
    esac
done
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "--streams needs a number (1 or more)" >&2; exit 2; }

# Ports of our own, so a scripts/loadtest.sh run is not mistaken for ours (but share no cores
# with one: the numbers of both would be off).
MOCK_PORT=${MOCK_PORT:-19290}
GW_PORT=${GW_PORT:-19280}
for p in "$MOCK_PORT" "$GW_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "127.0.0.1:$p is in use (set MOCK_PORT and GW_PORT)" >&2
        exit 1
    fi
done
. scripts/lib/rig.sh

# One build of the gateway (dhat as its allocator), the mock and the generator, as
# scripts/loadtest.sh builds them (so the gateway has the mock-server feature too).
ROOT=$PWD
SRC=.
if [ -n "$REV" ]; then
    SHORT=$(git rev-parse --short "$REV^{commit}")
    SRC=target/heap/src-$SHORT
    [ -d "$SRC" ] || git worktree add -q --detach "$SRC" "$SHORT"
    echo "building the shardgate of $SHORT in $SRC..." >&2
fi
# Debug info with function names (not line tables only): dhat's frames then carry full paths
# (`hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io`, not `poll_read_from_io`).
(cd "$SRC" && CARGO_PROFILE_RELEASE_DEBUG=limited CARGO_TARGET_DIR="$ROOT/target/dhat" \
    cargo build --release --locked -q -p shardgate -p shardgate-loadtest \
    --features shardgate/dhat-heap --bin shardgate --bin shardgate-mock --bin shardgate-loadtest)
BIN=target/dhat/release
[ -n "$GATEWAY" ] || GATEWAY=$BIN/shardgate
[ -x "$GATEWAY" ] || { echo "no gateway binary $GATEWAY" >&2; exit 2; }
OUT=target/heap/N$N-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The scenario, here rather than in loadtest/scenarios/ (a profiling rig, not a benchmark):
# streaming.toml's mock (each stream about 1.05 s) and N closed-loop connections for 4 s (about
# four streams each, back to back), no warm-up so that "before load" is before any request.
cat >"$OUT/heap.toml" <<TOML
name = "heap"
description = "scripts/heap.sh: $N concurrent slow streams (20 chunks, 50 ms apart)."
warmup_s = 0

[mock]
ttfc_ms = "50"
interval_ms = "50"
chunks = 20

[[requests]]
name = "stream"
stream = true
prompt_bytes = 400

[[steps]]
mode = "closed"
connections = $N
seconds = 4
TOML
start_mock "$OUT/heap.toml" "$OUT"
export SHARDGATE_DHAT_OUT=$PWD/$OUT/dhat-heap.json
start_gateway "$OUT" "$GATEWAY"
kill -0 "$GW" 2>/dev/null || { echo "the gateway exited: $OUT/gateway.log" >&2; exit 1; }
echo "gateway $GATEWAY (pid $GW) on core $GW_CORE, mock + generator on core $LOAD_CORE;" \
    "output in $OUT" >&2

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
sleep 1
RSS_BEFORE=$(rss_kib "$GW")
# VmRSS every 200 ms while the load runs (KiB, one a line).
(while kill -0 "$GW" 2>/dev/null; do rss_kib "$GW" || true; sleep 0.2; done) \
    >"$OUT/rss.txt" 2>/dev/null &
SAMPLER=$!
PIDS+=("$SAMPLER")

echo "driving $N concurrent streams (scale $SCALE)..." >&2
taskset -c "$LOAD_CORE" "$BIN/shardgate-loadtest" run "$OUT/heap.toml" \
    --url "http://127.0.0.1:$GW_PORT" --label gateway --pid "$GW" --scale "$SCALE" \
    --json "$OUT/load.json" --quiet >"$OUT/load.txt"
sleep 2 # the generator's connections close; the gateway settles
RSS_AFTER=$(rss_kib "$GW")
stop "$SAMPLER"
RSS_PEAK=$(sort -n "$OUT/rss.txt" | tail -1)
[ -n "$RSS_PEAK" ] || RSS_PEAK=$RSS_AFTER

echo "streams ended; SIGTERM to the gateway (pid $GW), waiting for it to drain..." >&2
kill -TERM "$GW"
wait "$GW" || echo "gateway exited with status $?" >&2

cat "$OUT/load.txt"
per() { echo "$(( ($1 - RSS_BEFORE) * 1024 / N )) B per stream over before"; }
echo
echo "gateway VmRSS ($GATEWAY, N = $N):"
echo "  before load       $RSS_BEFORE KiB"
echo "  peak (200 ms)     $RSS_PEAK KiB   $(per "$RSS_PEAK")"
echo "  after the streams $RSS_AFTER KiB   $(per "$RSS_AFTER")"
if [ -f "$SHARDGATE_DHAT_OUT" ]; then
    echo
    python3 scripts/lib/dhat_top.py "$SHARDGATE_DHAT_OUT" --streams "$N" | tee "$OUT/dhat-top.txt"
elif [[ $GATEWAY == target/dhat/* ]]; then
    echo "no profile at $SHARDGATE_DHAT_OUT (see $OUT/gateway.log)" >&2
    exit 1
fi
