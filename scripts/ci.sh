#!/usr/bin/env bash
# CI, also run by developers: format, lints, the README's test command, benches compile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-env.sh
echo "== cargo fmt --check"; cargo fmt --all --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings -D clippy::todo
echo "== tests"; scripts/test.sh   # = cargo test --workspace --locked, plus what the tests need
echo "== cargo bench --no-run"; cargo bench --workspace --locked --no-run
echo "ci: ok"
cat target/test-summary.txt
