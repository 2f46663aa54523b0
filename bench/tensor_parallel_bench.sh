#!/usr/bin/env bash
# Tensor parallelism on CPU threads against the other ways to use the same
# cores: one training step (4 blocks, C=256, T=128, batch 16 in 4
# micro-batches) on one device of one thread, one device of two threads
# (kernels split their loops), a tensor-parallel group of two ranks of one
# thread each (alone, and with sequence parallelism: the norms and residual
# adds on each rank's half of the tokens), and a two-stage 1F1B pipeline.
# The model is GPT, or with `moe` examples/moe.pf (8 experts of F=512, 2 per
# token: each rank of the group holds 4 of every layer's experts). The plans
# run in turn, round after round, so that the machine's drift touches them
# alike; each cell is the median step time of a run (its first two steps
# left out), and the ratios are to one thread within the same round.
#
#   bench/tensor_parallel_bench.sh [build dir] [rounds] [gpt|moe]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/rounds_common.sh
source "$here/bench/rounds_common.sh" "$@"
case ${3:-gpt} in
  gpt) file="$here/examples/gpt.pf"; model=(--bind L=4,C=256,H=8,T=128,S=128,V=256,B=16 -m 4) ;;
  moe) file="$here/examples/moe.pf"; model=(--bind L=4,C=256,H=8,R=2,F=512,T=128,V=256,B=16,E=8,K=2 -m 4) ;;
  *) echo "usage: $0 [build dir] [rounds] [gpt|moe]" >&2; exit 2 ;;
esac
"$pf" compile "$file" "${model[@]}" --devices cpu:1 -o "$work/one.json" > /dev/null
"$pf" compile "$file" "${model[@]}" --devices cpu:1x2 -o "$work/threads.json" > /dev/null
"$pf" compile "$file" "${model[@]}" --devices cpu:2 --tensor-parallel 2 -o "$work/tensor.json" > /dev/null
"$pf" compile "$file" "${model[@]}" --devices cpu:2 --tensor-parallel 2 --sequence-parallel \
  -o "$work/sequence.json" > /dev/null
"$pf" compile "$file" "${model[@]}" --devices cpu:2 -o "$work/pipeline.json" > /dev/null

median_ms() { median_step_ms "$pf" "$work/$1.json" "$here/DESIGN.md"; }

echo "| round | 1 thread ms | 1 device x 2 threads ms | TP 2 x 1 thread ms | TP 2 + SP ms | PP 2 (1F1B) ms | 2 threads / 1 | TP 2 / 1 | TP 2 + SP / 1 | PP 2 / 1 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  one=$(median_ms one); threads=$(median_ms threads); tensor=$(median_ms tensor); sequence=$(median_ms sequence)
  pipeline=$(median_ms pipeline)
  awk -v r="$r" -v a="$one" -v b="$threads" -v c="$tensor" -v s="$sequence" -v d="$pipeline" \
    'BEGIN {printf "| %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f |\n", r, a, b, c, s, d, b / a, c / a, s / a, d / a}'
done
