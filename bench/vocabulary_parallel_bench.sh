#!/usr/bin/env bash
# The vocabulary under tensor parallelism: one GPT training step whose
# vocabulary projection and loss weigh as much as its blocks (2 blocks,
# C=256, T=128, batch 16 in 4 micro-batches, V=8192 or 8191), on one thread
# and on a tensor-parallel group of two ranks of one thread each. With
# V=8192 the group splits the token table by rows, the projection by
# columns and the loss over each rank's classes; 8191 does not divide, so
# the same work runs whole on both ranks. The plans run in turn, round after
# round; each cell is the median step time of a run (its first two steps
# left out), the ratios to one thread of the same vocabulary in the round.
#
#   bench/vocabulary_parallel_bench.sh [build dir] [rounds]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/rounds_common.sh
source "$here/bench/rounds_common.sh" "$@"
for v in 8191 8192; do
  model=(--bind L=2,C=256,H=8,T=128,S=128,V=$v,B=16 -m 4)
  "$pf" compile "$here/examples/gpt.pf" "${model[@]}" --devices cpu:1 -o "$work/one_$v.json" > /dev/null
  "$pf" compile "$here/examples/gpt.pf" "${model[@]}" --devices cpu:2 --tensor-parallel 2 -o "$work/tp_$v.json" > /dev/null
done

median_ms() { median_step_ms "$pf" "$work/$1.json" "$here/DESIGN.md"; }

echo "| round | V | classes per rank | 1 thread ms | TP 2 x 1 thread ms | TP 2 / 1 |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for v in 8191 8192; do
    one=$(median_ms "one_$v"); tp=$(median_ms "tp_$v")
    how=$([ "$v" = 8192 ] && echo "4096 + 4096" || echo "4095 + 4096")
    awk -v r="$r" -v v="$v" -v h="$how" -v a="$one" -v b="$tp" \
      'BEGIN {printf "| %d | %d | %s | %.1f | %.1f | %.2f |\n", r, v, h, a, b, b / a}'
  done
done
