#!/usr/bin/env bash
# Expert parallelism on CPU threads: one training step of examples/moe.pf
# (4 blocks, C=256, T=128, 8 experts of F=512, 2 per token, batch 16 in 4
# micro-batches, AdamW) on one device of one thread, as two data-parallel
# replicas of one thread each holding every expert, and as the same two
# replicas sharing the experts out (each holds 4 of every layer's 8, which
# take both replicas' tokens), and so again with the optimizer state sharded
# too. The plans run in turn, round after round, so that the machine's drift
# touches them alike; each cell is the median step time of a run (its first
# two steps left out), the ratios to one thread within the same round. Then
# the peak memory compile predicts per rank, of these plans and of four
# replicas in two groups sharing the experts, the optimizer state or both.
#
#   bench/expert_parallel_bench.sh [build dir] [rounds]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/rounds_common.sh
source "$here/bench/rounds_common.sh" "$@"
model=("$here/examples/moe.pf" --bind L=4,C=256,H=8,R=2,F=512,T=128,V=256,B=16,E=8,K=2 -m 4 --devices cpu:1)
"$pf" compile "${model[@]}" -o "$work/one.json" > "$work/one.txt"
"$pf" compile "${model[@]}" --data-parallel 2 -o "$work/replicas.json" > "$work/replicas.txt"
"$pf" compile "${model[@]}" --data-parallel 2 --expert-parallel 2 -o "$work/shared.json" > "$work/shared.txt"
"$pf" compile "${model[@]}" --data-parallel 2 --expert-parallel 2 --shard-optimizer -o "$work/both.json" \
  > "$work/both.txt"
for flags in "" "--shard-optimizer" "--expert-parallel 2" "--expert-parallel 2 --shard-optimizer"; do
  name="dp4${flags// /}"
  # shellcheck disable=SC2086
  "$pf" compile "${model[@]}" --data-parallel 4 $flags -o "$work/$name.json" > "$work/$name.txt"
done

median_ms() { median_step_ms "$pf" "$work/$1.json" "$here/DESIGN.md"; }

echo "| round | 1 thread ms | DP 2, experts on each ms | DP 2, experts shared ms | and optimizer sharded ms |" \
  "DP 2 / 1 | shared / DP 2 | sharded too / DP 2 |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  one=$(median_ms one); replicas=$(median_ms replicas); shared=$(median_ms shared); both=$(median_ms both)
  awk -v r="$r" -v a="$one" -v b="$replicas" -v c="$shared" -v d="$both" \
    'BEGIN {printf "| %d | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f |\n", r, a, b, c, d, b / a, c / b, d / b}'
done
echo
# The stage table's peak memory: weights, gradients, AdamW state and activations of one rank.
for plan in one replicas shared both dp4 dp4--shard-optimizer dp4--expert-parallel2 dp4--expert-parallel2--shard-optimizer; do
  printf '%s: peak memory per rank %s\n' "$plan" "$(awk '$1 == "0" && $2 == "cpu:0" {print $(NF - 4), $(NF - 3)}' "$work/$plan.txt")"
done
