#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/; clang with AddressSanitizer and
# UndefinedBehaviorSanitizer) and runs each from its seed corpus. Fails on
# any crash, leak, timeout or sanitizer report, keeping the input that
# caused it in fuzz-failures/.
#   scripts/fuzz.sh [SECONDS [HARNESS...]]   (default: 60 s each, every harness)
#   PF_FUZZ_RUNS=N   run N inputs per harness instead of SECONDS (a long run)
#   PF_FUZZ_DIR      build folder (default: build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(ir plan safetensors profile cluster schedule)
build_dir=${PF_FUZZ_DIR:-build-fuzz}

export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DPF_FUZZ=ON -DPF_CUDA=OFF \
  -DPF_PYTHON=OFF -DPF_BUILD_BENCH=OFF -DPF_BUILD_TESTS=OFF >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target "${harnesses[@]/%/_fuzz}" >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
limit=(-max_total_time="$seconds")
[ -z "${PF_FUZZ_RUNS:-}" ] || limit=(-runs="$PF_FUZZ_RUNS")
for h in "${harnesses[@]}"; do
  # The seeds: checked-in files, and for the IR every model the tests use.
  seeds=(fuzz/corpus/"$h")
  [ "$h" != ir ] || seeds=(examples tests/corpus/broken)
  mkdir -p "$work/$h"
  start=$(date +%s)
  if ! "$build_dir/fuzz/${h}_fuzz" "$work/$h" "${seeds[@]}" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/$h-" -print_final_stats=1 >"$work/$h.log" 2>&1; then
    mkdir -p fuzz-failures
    cp "$work/$h"-* fuzz-failures/ 2>/dev/null || true
    echo "fuzz: $h FAILED (the input is in fuzz-failures/):"
    grep -v '^#' "$work/$h.log" | tail -40
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$h.log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$h.log")
  echo "fuzz: $h: $runs inputs in $(( $(date +%s) - start )) s ($rate/s), no crash, leak or sanitizer report"
done
