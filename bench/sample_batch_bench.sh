#!/usr/bin/env bash
# Several samples of one prompt drawn side by side (`pipeforge sample
# --samples k`): a step reads one token of each sample over the cache, so the
# weights (341 MB of a GPT-2 small-shaped model: 12 blocks of width 768,
# T = 1024, byte vocabulary) are read once for k tokens. After a prompt of
# 100 tokens, 33 tokens per sample, on `threads` threads:
#   ms per step   a token of every sample; ms per token: the step over k;
#   PyTorch       the same shapes and batch over a cache of keys and values,
#                 as Hugging Face's generate(num_return_sequences=k) keeps it
#                 (bench/torch_sample.py --batch k), OpenBLAS's own kernel
#                 for this CPU and tcmalloc.
#   k prompts     k different prompts (100, 88, 76, ... tokens) side by side
#                 (`--prompt` repeated), each sequence at its own position.
# The medians of three runs each, ours and PyTorch's in turn.
#
#   bench/sample_batch_bench.sh [build dir] [threads]
set -euo pipefail
build=${1:-build}
threads=${2:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/sample_common.sh"
prompt=100

echo "| samples | ms per step | ms per token | PyTorch, ms per step | ms per token / one sample's | ours / PyTorch |" \
  "k prompts, ms per token |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
single=""
for k in 1 2 4 8; do
  others=()
  for ((i = 1; i < k; i++)); do others+=(--prompt "$(head -c $((prompt - 12 * i)) "$work/text.txt")"); done
  ours=() theirs=() prompts=()
  for round in 1 2 3; do
    ours+=("$(ms_per_token "$prompt" --samples "$k")")
    prompts+=("$(ms_per_token "$prompt" "${others[@]}")")
    theirs+=("$(torch_ms "$prompt" --batch "$k")")
  done
  token=$(median "${ours[@]}")
  reference=$(median "${theirs[@]}")
  single=${single:-$token}
  printf "| %d | %.1f | %.2f | %.1f | %.2f | %.2f | %.2f |\n" "$k" "$(calc "$token * $k")" "$token" "$reference" \
    "$(calc "$token / $single")" "$(calc "$token * $k / $reference")" "$(median "${prompts[@]}")"
done
