#!/usr/bin/env bash
# Fuzz every target of shardgate::fuzz_logic for a bounded time each.
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]     (default: 60 s, every target)
#   FUZZ_ENGINE=mutate scripts/fuzz.sh 30                  (no AFL: the structured mutator)
#
# Engine (decided for issue 10): AFL++ through cargo-afl, coverage-guided, on the pinned stable
# toolchain. cargo-afl 0.18 instruments with rustc's own SanitizerCoverage passes, which stable
# rustc accepts, and `cargo install cargo-afl` builds its bundled AFL++ (4.40c) runtime and
# afl-fuzz on the spot: about 2 minutes on the 2-core machine, from crates.io alone. Debian's
# afl++ (4.04c) is not needed; its LLVM plugins would have to match rustc's LLVM (22), which
# Debian does not ship, and the sancov path needs no plugin. The instrumented build of the
# fuzz crate (fuzz/, its own workspace, into target/fuzz) costs 5-10 minutes once, then seconds.
# Where cargo-afl cannot be installed, FUZZ_ENGINE=mutate runs the same targets under the
# structured mutator of tests/fuzz.rs (fixtures flipped, spliced, cut, with dictionary tokens)
# for the same time per target: no coverage feedback, but the same promises checked.
#
# Seeds: the fixtures named by each target (tests/fixtures/), tests/fuzz-corpus/<target>/, and
# the queue the previous run of the target left in target/fuzz/work/ (runs add up; FUZZ_FRESH=1
# starts over); dictionary: tests/fuzz-corpus/fuzz.dict. A crash (a panic, or a broken promise, which the
# harness turns into a panic) is copied to target/fuzz/crashes/<target>/ and the script exits 1;
# keep it as a regression by copying it into tests/fuzz-corpus/<target>/ once fixed
# (tests/fuzz.rs replays that folder in `cargo test`).
#
# Last long run (2 Dec 2026, the 2-core VM shared with other builds, nice 10, two targets at a
# time): 300 s per target (60 s, then 240 s seeded by the first run's queue), 15 targets,
# 23.7 M executions (0.41 M for stream_openai_openai to 4.5 M for embeddings_request; the
# stream targets run 1-5 k exec/s, each input being transcoded whole, cut, and byte by byte).
# Found and fixed: usage sums overflowing on huge upstream token counts (whole_gemini; a panic
# in debug, a wrapped, tiny bill in release); SSE events split differently when a blank line
# came in a read of its own (pass-through usage stripping depended on the reads); a translated
# stream whose one read held the upstream's in-band error and then a malformed event reached
# the client empty (the relay dropped the bytes translated before the failing event).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
engine="${FUZZ_ENGINE:-afl}"
AFL_VERSION=0.18.2

all_targets() {
  sed -n 's/^ *name: "\([a-z_]*\)",$/\1/p' src/fuzz_logic.rs
}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(all_targets)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no targets found in src/fuzz_logic.rs" >&2; exit 2; }

# The fixture patterns a target names as seeds (`seeds: &["kind/pattern", ...]`).
seed_specs() {
  awk -v t="$1" '
    $0 ~ "name: \"" t "\"," { on = 1; next }
    on && /seeds:/ { while (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); $0 = substr($0, RSTART + RLENGTH) } ; exit }
  ' src/fuzz_logic.rs
}

if [ "$engine" = mutate ]; then
  echo "== fuzz.sh: structured mutator, ${secs}s per target"
  SHARDGATE_FUZZ_SECS="$secs" SHARDGATE_FUZZ_TARGETS="${targets[*]}" \
    cargo test --test fuzz --locked -- --nocapture mutated_fixtures_break_no_promise
  exit $?
fi

# The instrumented build has its own target dir: other RUSTFLAGS, never the main build's artefacts.
export CARGO_TARGET_DIR="$PWD/target/fuzz"
if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl $AFL_VERSION (builds AFL++; about 2 minutes)"
  cargo install cargo-afl --locked --version "$AFL_VERSION"
fi
echo "== building the instrumented fuzz binary (target/fuzz)"
cargo afl build --release --manifest-path fuzz/Cargo.toml  # not --locked: shardgate's new deps enter fuzz/Cargo.lock
bin="$CARGO_TARGET_DIR/release/shardgate-fuzz"

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_SKIP_CRASHES=1 AFL_QUIET=1
work="$CARGO_TARGET_DIR/work"
found=0
summary=()
for t in "${targets[@]}"; do
  in="$work/$t/in"
  out="$work/$t/out"
  rm -rf "$in"
  mkdir -p "$in"
  n=0
  # Runs add up: the queue a previous run of this target left is part of the seeds.
  if [ -d "$out/default/queue" ] && [ "${FUZZ_FRESH:-0}" != 1 ]; then
    for f in "$out"/default/queue/id:*; do
      [ -f "$f" ] && cp "$f" "$in/prev-$(basename "$f" | cut -d, -f1 | tr : _)" && n=$((n + 1))
    done
  fi
  rm -rf "$out"
  while read -r spec; do
    for f in tests/fixtures/$spec; do
      [ -f "$f" ] && cp "$f" "$in/$(echo "$f" | tr / _)" && n=$((n + 1))
    done
  done < <(seed_specs "$t")
  for f in tests/fuzz-corpus/"$t"/*; do
    [ -f "$f" ] && cp "$f" "$in/" && n=$((n + 1))
  done
  echo "== $t: ${secs}s from $n seeds"
  SHARDGATE_FUZZ_TARGET="$t" cargo afl fuzz -i "$in" -o "$out" -x tests/fuzz-corpus/fuzz.dict \
    -V "$secs" -- "$bin" >"$work/$t/afl.log" 2>&1 || {
    echo "afl-fuzz failed for $t; the end of its log:" >&2
    tail -20 "$work/$t/afl.log" >&2
    exit 2
  }
  stats="$out/default/fuzzer_stats"
  stat() { sed -n "s/^$1 *: *//p" "$stats"; }
  crashes=$(stat saved_crashes)
  line=$(printf '%-28s execs %10s  exec/s %7s  corpus %5s  edges %6s  crashes %s' \
    "$t" "$(stat execs_done)" "$(stat execs_per_sec)" "$(stat corpus_count)" \
    "$(stat edges_found)" "$crashes")
  echo "$line"
  summary+=("$line")
  if [ "${crashes:-0}" != 0 ]; then
    found=1
    rm -rf "target/fuzz/crashes/$t"
    mkdir -p "target/fuzz/crashes/$t"
    cp "$out"/default/crashes/id:* "target/fuzz/crashes/$t/"
    for c in "target/fuzz/crashes/$t"/id:*; do
      echo "   crash: $c"
      why=$( (SHARDGATE_FUZZ_TARGET="$t" "$bin" <"$c") 2>&1 || true)
      grep -m1 -A1 "panicked" <<<"$why" | sed 's/^/      /' || true
    done
  fi
done
echo "== fuzz.sh summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$found" = 1 ]; then
  echo "fuzz.sh: crashes found (target/fuzz/crashes/); replay one with"
  echo "  SHARDGATE_FUZZ_TARGET=<target> $bin < <file>"
  exit 1
fi
echo "fuzz.sh: no crash"
