#!/usr/bin/env bash
# The installed Pipeforge package from a user's side: cmake --install into a
# temporary prefix, configure and build examples/embed against it, compile a
# plan with the installed pipeforge, run the program, check its output.
#
#   check_embed.sh CMAKE BUILD_DIR SOURCE_DIR
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 CMAKE BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
cmake=$1
build=$2
source=$3

work=$(mktemp -d "${TMPDIR:-/tmp}/pf_embed.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "embed_package: FAILED: $*" >&2
  exit 1
}

# Each step's output is kept in a log and shown only when the step fails.
step() {
  local name=$1
  shift
  local status=0
  "$@" >"$work/$name.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$work/$name.log" >&2
    fail "$name: '$*' exited with status $status"
  fi
}

prefix=$work/prefix
step install "$cmake" --install "$build" --prefix "$prefix"
[ -f "$prefix/include/runtime/runtime.h" ] || fail "install: no include/runtime/runtime.h under $prefix"
config=$(find "$prefix" -name pipeforgeConfig.cmake -print -quit)
[ -n "$config" ] || fail "install: no pipeforgeConfig.cmake under $prefix"
[ -f "$(dirname "$config")/pipeforgeConfigVersion.cmake" ] || fail "install: no pipeforgeConfigVersion.cmake"

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
step configure "$cmake" -S "$source/examples/embed" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}"
step build "$cmake" --build "$work/build" -j2

step compile "$prefix/bin/pipeforge" compile "$source/examples/mlp.pf" --bind I=32,H=64,L=2,K=10 --batch 16 \
  --devices cpu:2 --microbatches 4 -o "$work/plan.json"

steps=5
checkpoint=$work/embed_checkpoint
step run "$work/build/embed" "$work/plan.json" "$steps" "$checkpoint"
out=$work/run.log
cat "$out"

grep -q '^loaded .*: 2 stages on 2 devices$' "$out" || fail "run: no 'loaded ... 2 stages on 2 devices' line"
grep -q '^input x: f32\[16,32\]$' "$out" || fail "run: batch input x is not f32[16,32]"
grep -q '^input labels: i32\[16\]$' "$out" || fail "run: batch input labels is not i32[16]"
# One finite loss per step, and training on one fixed batch must lower it.
losses=$(sed -n 's/^step [0-9]* loss \([0-9.]*\) .*/\1/p' "$out")
[ "$(echo "$losses" | grep -c .)" -eq "$steps" ] || fail "run: expected $steps 'step N loss X' lines, got: $losses"
first=$(echo "$losses" | head -n 1)
last=$(echo "$losses" | tail -n 1)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "run: the loss did not fall ($first -> $last)"
grep -q "^saved $checkpoint at step $steps\$" "$out" || fail "run: no 'saved ... at step $steps' line"
grep -q "^checkpoint round trip: ok (step $((steps + 1))," "$out" || fail "run: the checkpoint round trip failed"
[ -s "$checkpoint/index.json" ] || fail "run: $checkpoint/index.json is missing or empty"
ls "$checkpoint"/stage-0.*.safetensors > /dev/null || fail "run: $checkpoint has no shard of stage 0"
! ls "$checkpoint"/*.tmp > /dev/null 2>&1 || fail "run: a .tmp file was left behind in $checkpoint"
echo "embed_package: ok"
