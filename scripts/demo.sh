#!/usr/bin/env bash
# Sets up, builds and runs the main demo: compile a small GPT over 4 CPU
# devices, print the stage table, train it with 1F1B on a text file while the
# loss falls, sample text from what it learnt, and write the placement
# picture, the schedule and a trace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh --target pipeforge
pf=build/tools/pipeforge
out=out
mkdir -p "$out"
# Any text will do; the GPL ships with every Debian system.
text=${PF_DEMO_TEXT:-/usr/share/common-licenses/GPL-3}
gpt="--bind B=16,L=4,C=128,H=4,T=64,S=64,V=256"

echo "== the model: GPT-2's architecture, 4 layers of width 128, byte vocabulary =="
# shellcheck disable=SC2086
$pf stats examples/gpt.pf $gpt
echo
echo "== compile: cut it into 4 stages by cost, 8 micro-batches, 1F1B =="
# shellcheck disable=SC2086
$pf compile examples/gpt.pf $gpt --devices cpu:4 --microbatches 8 --schedule 1f1b -o "$out/gpt_plan.json"
$pf dump "$out/gpt_plan.json" --format svg -o "$out/gpt_plan.svg"
$pf schedule "$out/gpt_plan.json" --format svg -o "$out/schedule.svg"
echo
echo "== train: 4 pipeline stages as 4 CPU devices (threads), on $text =="
$pf run "$out/gpt_plan.json" --steps 300 --optimizer adamw --lr 2e-3 --warmup 20 --text "$text" \
  --trace "$out/gpt_trace.json" --checkpoint "$out/gpt_checkpoint" | awk 'NR <= 4 || NR % 25 == 1 || /wrote/'
echo
echo "== sample: the trained weights go on from a prompt, a byte at a time =="
# shellcheck disable=SC2086
$pf sample examples/gpt.pf $gpt --weights "$out/gpt_checkpoint" --prompt "The licenses " --tokens 200 \
  --temperature 0.8 --seed 1
echo
echo "pictures: $out/gpt_plan.svg (stages), $out/schedule.svg (1F1B); trace: $out/gpt_trace.json (ui.perfetto.dev)"
