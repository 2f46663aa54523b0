#!/usr/bin/env bash
# Sets up, builds and runs the main demo: check GPT-2 small and print its
# per-layer statistics.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh --target pipeforge
pf=build/tools/pipeforge

echo "== pipeforge check examples/gpt.pf =="
$pf check examples/gpt.pf
echo
echo "== pipeforge stats examples/gpt.pf =="
$pf stats examples/gpt.pf
