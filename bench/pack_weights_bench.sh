#!/usr/bin/env bash
# Weights kept packed through a step (`run --pack-weights on`) against
# packed by every product (`off`): the MLP (784-4096x3-10, batch 256 in 8
# micro-batches of 32 rows) as a 2-stage 1F1B pipeline, on one device, and
# as the pipeline with bf16 products (compile --dtype bf16: packed bf16
# pairs where the CPU has AVX-512 BF16), and a 4-block GPT (batch 8 in 8
# micro-batches of 128 tokens) as a 2-stage pipeline, SGD. Each cell is the median step time of one run (its first
# two steps left out); off and on run in turn, round after round, so that
# the machine's drift touches them alike, and each ratio is within a round.
#
#   bench/pack_weights_bench.sh [build dir] [rounds]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/rounds_common.sh
source "$here/bench/rounds_common.sh" "$@"
"$pf" compile "$here/examples/mlp.pf" --devices cpu:2 -m 8 -o "$work/mlp_pipeline.json" > /dev/null
"$pf" compile "$here/examples/mlp.pf" --devices cpu:1 -m 8 -o "$work/mlp_one.json" > /dev/null
"$pf" compile "$here/examples/mlp.pf" --devices cpu:2 -m 8 --dtype bf16 -o "$work/mlp_bf16_pipeline.json" > /dev/null
"$pf" compile "$here/examples/gpt.pf" --bind B=8,L=4,C=512,H=8,T=128,S=128,V=8192 --devices cpu:2 -m 8 \
  -o "$work/gpt_pipeline.json" > /dev/null

echo "| plan | round | packed by every product ms | kept packed ms | kept / every product |"
echo "|---|---:|---:|---:|---:|"
for r in $(seq 1 "$rounds"); do
  for plan in mlp_pipeline mlp_one mlp_bf16_pipeline gpt_pipeline; do
    text=""
    [ "$plan" = gpt_pipeline ] && text="$here/DESIGN.md"
    off=$(median_step_ms "$pf" "$work/$plan.json" "$text" --optimizer sgd --pack-weights off)
    on=$(median_step_ms "$pf" "$work/$plan.json" "$text" --optimizer sgd --pack-weights on)
    echo "| $plan | $r | $off | $on | $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}') |"
  done
done
