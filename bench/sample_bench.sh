#!/usr/bin/env bash
# Sampling a language model (`pipeforge sample`): milliseconds per drawn
# token of a GPT-2 small-shaped model (12 blocks of width 768, T = 1024,
# byte vocabulary, weights after one step) on one thread, after prompts of
# several lengths:
#   cached    each drawn token read alone over a cache of the keys and
#             values before it (the default);
#   no cache  (--no-cache) each token reads the whole sequence again, with a
#             program compiled for the next power of two (at least 16) that
#             holds it;
#   PyTorch   the same model and weights' shapes in PyTorch, over a cache of
#             keys and values as Hugging Face's generate() keeps it
#             (bench/torch_sample.py), in its best setting here: OpenBLAS's
#             own kernel for this CPU and tcmalloc.
# Each cell is the command's own figure: the time from the first drawn token
# to the last over the tokens between (the prompt, loading and compiling
# left out); 33 tokens, or as many as stay within T. Cached and PyTorch:
# the median of three runs each, taken in turn.
#
#   bench/sample_bench.sh [build dir] [threads]
set -euo pipefail
build=${1:-build}
threads=${2:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/sample_common.sh"
prompts=(8 100 500 1000)

echo "| prompt tokens | cached | no cache | PyTorch, cached | cached / no cache | cached / PyTorch |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${prompts[@]}"; do
  # Ours and PyTorch's in turn, three rounds: the median of each.
  ours=() theirs=()
  for round in 1 2 3; do
    ours+=("$(ms_per_token "$n")")
    theirs+=("$(torch_ms "$n")")
  done
  cached=$(median "${ours[@]}")
  reference=$(median "${theirs[@]}")
  whole=$(ms_per_token "$n" --no-cache)
  printf "| %d | %.1f | %.1f | %.1f | %.3f | %.2f |\n" "$n" "$cached" "$whole" "$reference" \
    "$(calc "$cached / $whole")" "$(calc "$cached / $reference")"
done
