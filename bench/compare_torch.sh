#!/usr/bin/env bash
# Pipeforge against PyTorch: one training step of the reference MLP and GPT on this CPU, both programs in the same
# run, under the same OpenBLAS kernel setting and thread count, and one table with the ratio Pipeforge / PyTorch.
#
#   bench/compare_torch.sh [TORCH_BENCH] [BUILD_DIR]
#
# TORCH_BENCH is the reference script (default ../shared/bench/torch_bench.py, from the repository root; it is
# not copied here). BUILD_DIR holds bench/train_step_bench (default build). Environment: THREADS (default
# "1 2"), STEPS and WARMUP (default 10 and 3, as torch_bench.py), SETTINGS (default "env avx512": the
# environment as it is, then `env -u OPENBLAS_CORETYPE` so that OpenBLAS picks its AVX-512 kernel).
#
# PyTorch runs as its best configuration does: tcmalloc preloaded (fresh memory is slow to touch here), torch
# threads = OpenBLAS threads = K. At K = 2 it also runs with 1 torch thread and 2 OpenBLAS threads, which is
# faster for it on 2 cores; the table's "best torch" is the faster of the two. Medians of timed steps after
# warm-up. The machine is shared and its speed drifts by 10-40 % within minutes: ROUNDS=R (default 1) repeats the
# whole comparison R times, alternating the programs, and the table then gives the median over rounds of each
# program's median and the median of the per-round ratios. Note `uptime` beside any number you quote.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_bench="${1:-$root/../shared/bench/torch_bench.py}"
build="${2:-$root/build}"
threads="${THREADS:-1 2}"
steps="${STEPS:-10}"
warmup="${WARMUP:-3}"
settings="${SETTINGS:-env avx512}"
rounds="${ROUNDS:-1}"
python=/usr/bin/python3  # Debian's interpreter, the one with torch
tcmalloc=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
bench="$build/bench/train_step_bench"

[[ -f "$torch_bench" ]] || { echo "compare_torch.sh: no PyTorch script at $torch_bench" >&2; exit 1; }
[[ -x "$bench" ]] || { echo "compare_torch.sh: build $bench first (make -C $build train_step_bench)" >&2; exit 1; }
[[ -f "$tcmalloc" ]] || { echo "compare_torch.sh: $tcmalloc is missing (apt-get install -y libtcmalloc-minimal4)" >&2; exit 1; }

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

# Runs "$@" under a setting: the environment as it is, or without OPENBLAS_CORETYPE.
in_setting() {
  local setting="$1"
  shift
  if [[ "$setting" == avx512 ]]; then env -u OPENBLAS_CORETYPE "$@"; else "$@"; fi
}

echo "load before: $(uptime)" >&2
for round in $(seq 1 "$rounds"); do
for setting in $settings; do
  for k in $threads; do
    for model in mlp gpt; do
      echo "[round $round, $setting, $k thread(s)] torch $model" >&2
      in_setting "$setting" env LD_PRELOAD="$tcmalloc" "$python" "$torch_bench" --model "$model" --threads "$k" \
        --steps "$steps" --warmup "$warmup" --json |
        sed "s/^{/{\"round\": $round, \"who\": \"torch\", \"setting\": \"$setting\", \"k\": $k, /" >>"$results"
      if [[ "$k" -gt 1 ]]; then
        echo "[round $round, $setting, $k thread(s)] torch $model, 1 torch thread + $k OpenBLAS threads" >&2
        in_setting "$setting" env LD_PRELOAD="$tcmalloc" "$python" "$torch_bench" --model "$model" --threads 1 \
          --openblas-threads "$k" --steps "$steps" --warmup "$warmup" --json |
          sed "s/^{/{\"round\": $round, \"who\": \"torch_1+$k\", \"setting\": \"$setting\", \"k\": $k, /" >>"$results"
      fi
    done
    echo "[round $round, $setting, $k thread(s)] pipeforge" >&2
    in_setting "$setting" "$bench" --threads "$k" --steps "$steps" --warmup "$warmup" --json |
      sed "s/^{/{\"round\": $round, \"who\": \"pipeforge\", \"setting\": \"$setting\", \"k\": $k, /" >>"$results"
  done
done
done
echo "load after: $(uptime)" >&2

"$python" - "$results" "$rounds" <<'EOF'
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rounds = int(sys.argv[2])

def median_ms(who, setting, k, model, round_=None):
    ms = [r["median_ms"] for r in rows if r["who"] == who and r["setting"] == setting and r["k"] == k
          and r["model"] == model and (round_ is None or r["round"] == round_)]
    return statistics.median(ms) if ms else None

names = {"env": "environment as it is", "avx512": "env -u OPENBLAS_CORETYPE"}
print("| OpenBLAS setting (kernel) | model | threads | torch ms | torch 1 thr + OpenBLAS K ms | best torch ms "
      "| Pipeforge ms | Pipeforge / best torch | rounds at or under 1 |")
print("|---|---|---|---|---|---|---|---|---|")
seen = []
for r in rows:
    key = (r["setting"], r["k"], r["model"])
    if r["who"] != "pipeforge" or key in seen:
        continue
    seen.append(key)
    setting, k, model = key
    # A ratio compares runs a minute apart in one round; the machine's speed drifts across rounds.
    ratios = []
    for i in range(1, rounds + 1):
        best = min(x for x in (median_ms("torch", *key, i), median_ms(f"torch_1+{k}", *key, i)) if x)
        ratios.append(median_ms("pipeforge", *key, i) / best)
    t, t1, pf = median_ms("torch", *key), median_ms(f"torch_1+{k}", *key), median_ms("pipeforge", *key)
    best = min(x for x in (t, t1) if x)
    core = r.get("openblas_core")
    t1_text = f"{t1:.1f}" if t1 else "-"
    print(f"| {names.get(setting, setting)} ({core}) | {model} | {k} | {t:.1f} | {t1_text} | {best:.1f} | "
          f"{pf:.1f} | {statistics.median(ratios):.2f} | {sum(x <= 1 for x in ratios)}/{rounds} |")
EOF
