#!/usr/bin/env bash
# CI, also run by developers: format, lints, the README's test command, benches compile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-env.sh
# One build on a fresh machine: no incremental state (about 10 GB it would never reuse) and line
# tables only in debug builds (enough for test backtraces; full debug info doubles target/, and
# a CI run once failed on a full disk while linking).
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
# Each step's name with the time since CI started (the budget is 25 minutes on 2 cores).
step() { echo "== $1 (at $((SECONDS / 60))m$((SECONDS % 60))s)"; }
step "cargo fmt --check"; cargo fmt --all --check
step "cargo clippy"; cargo clippy --workspace --all-targets --locked --features shardgate/local-embed -- -D warnings -D clippy::todo
step "tests"; scripts/test.sh   # = cargo test --workspace --locked, plus what the tests need
# CI only checks that the benches build and that the load-test rig runs, never timings: no
# LTO and opt-level 1 for those two release builds, which share their artifacts (thin LTO
# over a dozen executables costs CI about ten minutes on 2 cores). Measured runs
# (scripts/loadtest.sh, cargo bench) keep the profiles'.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_BENCH_LTO=false
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_BENCH_OPT_LEVEL=1
step "cargo bench --no-run"; cargo bench --workspace --locked --no-run
# The load-test rig end to end on this fresh machine (nginx installed if missing); a short run,
# checked for the side-by-side table, never for timings.
step "loadtest smoke"
RESULTS_DIR=target/loadtest-smoke scripts/loadtest.sh overhead --scale 0.02 | tee target/loadtest-smoke.txt
grep -q "gateway/nginx: req/s" target/loadtest-smoke.txt
test -s target/loadtest-smoke/overhead.svg
step "done"; echo "ci: ok"
cat target/test-summary.txt
