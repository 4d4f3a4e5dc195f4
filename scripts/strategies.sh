#!/usr/bin/env bash
# Compare the routing strategies (issue 11: "the default strategy is the one you can defend
# with a measurement"). Runs the ignored test `compare_strategies` in tests/strategies.rs:
# for each strategy (weighted, round_robin, lowest_latency, least_busy, lowest_cost, score)
# and each profile of two in-process mock deployments A and B, fresh mocks and a fresh
# one-shard gateway, a warm-up, then 400 requests from 4 clients (every 4th streamed),
# three times over.
#   latency_skew  A 5 ms, B 50 ms, same price
#   flaky_fast    A 3..7 ms (mean 5) but 500 in 20% of 1 ms time slots (seeded), B 20 ms
#   cheap_slow    A 40 ms at a tenth of B's price, B 5 ms
# Default routing settings (max_attempts 3, backoff, retry budget, breakers). Reports the
# share answered by A and B, client p50/p99/mean latency, upstream attempts per request,
# client errors, spend per request, breaker ejections and retry-budget refusals.
#
#   scripts/strategies.sh [--debug]
#
# Release build by default (about 2.5 minutes); --debug skips the release build (noisier).
# Narrow a run with COMPARE_STRATEGIES=score,lowest_latency COMPARE_PROFILES=flaky_fast
# COMPARE_REPEATS=N; COMPARE_VERBOSE=1 prints /admin/scores and /admin/routes after each run.
# Prints the table and writes target/strategies.csv (pooled lines have run=all). Timings
# need a quiet machine: nothing else building or load testing.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
PROFILE=(--release)
while [ $# -gt 0 ]; do
    case $1 in
        --debug) PROFILE=(); shift ;;
        *) usage ;;
    esac
done

echo "machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: cargo test ${PROFILE[*]} --test strategies -- --ignored --nocapture compare_strategies"
cargo test "${PROFILE[@]}" --test strategies -- --ignored --nocapture compare_strategies
echo "CSV: ${CARGO_TARGET_DIR:-target}/strategies.csv"
