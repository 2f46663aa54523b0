#!/usr/bin/env bash
# Continuous batching (`pipeforge sample --max-batch N`) against static
# batches: 16 prompts of 20 to 95 tokens, 48 tokens each at most, each
# sample ending at its first of 16 stop bytes (0x80 to 0x8f, which the
# model, one step into training on ASCII text, draws at about its starting
# odds: lengths about geometric), on the GPT-2 small-shaped model of the sampling benchmarks. Static: the prompts in groups of N, one `sample`
# after another, each group stepping until its last sample ends. Continuous:
# one `sample` of all 16 with --max-batch N, a sample that ends making room
# for the next prompt. Prints the seconds of drawing (the commands' own
# timing, loading excluded) and the tokens drawn, medians of three runs each,
# in turn.
#
#   bench/continuous_batch_bench.sh [build dir] [threads]
set -euo pipefail
build=${1:-build}
threads=${2:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/sample_common.sh"

stops=()
for b in 80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f; do stops+=(--stop "$(printf "\\x$b")"); done
prompts=()
for i in $(seq 0 15); do prompts+=(--prompt "$(head -c $((20 + 5 * i)) "$work/text.txt")"); done

# Seconds and tokens of one `sample` (its last line on standard error).
drawing() {
  "$pf" sample "$here/examples/gpt.pf" --bind "$bind" --weights "$work/w.safetensors" --threads "$threads" \
    --tokens 48 --temperature 1 "${stops[@]}" --seed 1 "$@" 2>&1 > /dev/null |
    sed -n 's/^\([0-9]*\) tokens in \([0-9.]*\) s.*$/\2 \1/p'
}

echo "| N | static batches (s) | continuous (s) | tokens | continuous / static |"
echo "|---:|---:|---:|---:|---:|"
for n in 2 4 8; do
  static=() continuous=() tokens=0
  for round in 1 2 3; do
    seconds=0 tokens=0
    for ((g = 0; g < 16; g += n)); do
      read -r s t < <(drawing "${prompts[@]:$((2 * g)):$((2 * n))}")
      seconds=$(calc "$seconds + $s")
      tokens=$((tokens + t))
    done
    static+=("$seconds")
    read -r s t < <(drawing "${prompts[@]}" --max-batch "$n")
    continuous+=("$s")
  done
  a=$(median "${static[@]}") b=$(median "${continuous[@]}")
  printf "| %d | %.2f | %.2f | %d | %.2f |\n" "$n" "$a" "$b" "$tokens" "$(calc "$b / $a")"
done
