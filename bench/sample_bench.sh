#!/usr/bin/env bash
# Sampling a language model (`pipeforge sample`): seconds per drawn token of
# a GPT-2 small-shaped model (12 blocks of width 768, T = 1024, byte
# vocabulary, untrained weights) on one thread, after prompts of several
# lengths. A sequence of n tokens runs a program compiled for the shortest
# power of two (at least 16) that holds n; the baseline is the same model
# with T written as a number, which runs every sequence at all 1024
# positions. Each cell: (time to draw 1 + K tokens - time to draw 1) / K,
# so that loading, compiling and the causality check are left out.
# (The prompt's length and the draws stay within T = 1024.)
#
#   bench/sample_bench.sh [build dir] [K]
set -euo pipefail
build=${1:-build}
draws=${2:-16}
pf="$build/tools/pipeforge"
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bind="L=12,C=768,H=12,S=1024,V=256"
/usr/bin/python3 -c "open('$work/text.txt', 'w').write('pipeforge samples text. ' * 100)"
"$pf" run "$here/examples/gpt.pf" --bind "B=1,T=1024,$bind" --text "$work/text.txt" --steps 1 \
  --save-weights "$work/w.safetensors" > /dev/null
# The same model with T a number: every sequence at 1024 positions.
sed -e '/^dim T = /d' -e 's/\bT\b/1024/g' "$here/examples/gpt.pf" > "$work/gpt_t1024.pf"

seconds() {  # model, bind, prompt length, tokens
  local prompt
  prompt=$(head -c "$3" "$work/text.txt")
  local start end
  start=$(date +%s.%N)
  "$pf" sample "$1" --bind "$2" --weights "$work/w.safetensors" --prompt "$prompt" --tokens "$4" > /dev/null 2>&1
  end=$(date +%s.%N)
  calc "$end - $start"
}
calc() { /usr/bin/python3 -c "print($1)"; }
per_token() {  # model, bind, prompt length
  local one many
  one=$(seconds "$1" "$2" "$3" 1)
  many=$(seconds "$1" "$2" "$3" $((draws + 1)))
  printf "%.3f" "$(calc "($many - $one) / $draws")"
}

program() {  # the length of the program a sequence of $1 tokens runs
  local length=16
  while [ "$length" -lt "$1" ]; do length=$((length * 2)); done
  echo $((length > 1024 ? 1024 : length))
}

echo "| prompt tokens | programs | s per token | s per token at T = 1024 | ratio |"
echo "|---:|---:|---:|---:|---:|"
for n in 8 100 500 1000; do
  short=$(per_token "$here/examples/gpt.pf" "T=1024,$bind" "$n")
  whole=$(per_token "$work/gpt_t1024.pf" "$bind" "$n")
  first=$(program $((n + 1)))
  last=$(program $((n + draws)))
  programs=$([ "$first" = "$last" ] && echo "$first" || echo "$first, $last")
  printf "| %d | %s | %s | %s | %.2f |\n" "$n" "$programs" "$short" "$whole" "$(calc "$short / $whole")"
done
