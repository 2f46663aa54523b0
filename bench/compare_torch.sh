#!/usr/bin/env bash
# Pipeforge against PyTorch: one training step of the reference MLP and GPT on this CPU, both programs under
# the same OpenBLAS kernel setting and thread count, timed in lockstep, and one table with the ratio
# Pipeforge / PyTorch.
#
#   bench/compare_torch.sh [TORCH_BENCH] [BUILD_DIR]
#
# TORCH_BENCH is the reference script (default ../shared/bench/torch_bench.py, from the repository root; it is
# not copied here). BUILD_DIR holds bench/train_step_bench (default build). Environment: THREADS (default
# "1 2"), MODELS (default "mlp gpt"), STEPS (cycles, default 20), WARMUP (default 3), SETTINGS (default
# "env avx512": the environment as it is, then `env -u OPENBLAS_CORETYPE` so that OpenBLAS picks its AVX-512
# kernel; also "avx2": both programs as on a CPU without AVX-512, OpenBLAS's Haswell kernel,
# ATEN_CPU_CAPABILITY=avx2 for PyTorch's own kernels and PF_CPU_ISA=avx2 for Pipeforge's).
#
# PyTorch runs as its best configuration does: tcmalloc preloaded (fresh memory is slow to touch here), torch
# threads = OpenBLAS threads = K; at K = 2 also 1 torch thread + 2 OpenBLAS threads, which is faster for it on
# 2 cores. The programs run as step servers side by side and bench/lockstep.py times one step of each in
# turn, cycle after cycle: the machine is shared and its speed drifts by 10-40 % within minutes, and this way
# the drift falls on all of them alike. "best torch" is the PyTorch configuration with the lower median; the
# ratio is the median over cycles of Pipeforge's step over that configuration's step in the same cycle.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_bench="$(realpath "${1:-$root/../shared/bench/torch_bench.py}")"
build="${2:-$root/build}"
threads="${THREADS:-1 2}"
models="${MODELS:-mlp gpt}"
steps="${STEPS:-20}"
warmup="${WARMUP:-3}"
settings="${SETTINGS:-env avx512}"
python=/usr/bin/python3  # Debian's interpreter, the one with torch
tcmalloc=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
bench="$build/bench/train_step_bench"

[[ -f "$torch_bench" ]] || { echo "compare_torch.sh: no PyTorch script at $torch_bench" >&2; exit 1; }
[[ -x "$bench" ]] || { echo "compare_torch.sh: build $bench first (make -C $build train_step_bench)" >&2; exit 1; }
[[ -f "$tcmalloc" ]] || { echo "compare_torch.sh: $tcmalloc is missing (apt-get install -y libtcmalloc-minimal4)" >&2; exit 1; }

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

# A command under a setting: the environment as it is, without OPENBLAS_CORETYPE, or as on an AVX2 CPU.
in_setting() {
  case "$1" in
    avx512) echo "env -u OPENBLAS_CORETYPE" ;;
    avx2) echo "env OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 PF_CPU_ISA=avx2" ;;
    *) echo "env" ;;
  esac
}

echo "load before: $(uptime)" >&2
for setting in $settings; do
  prefix="$(in_setting "$setting")"
  core="$($prefix "$python" -c "
import ctypes; lib = ctypes.CDLL('libopenblas.so.0'); lib.openblas_get_corename.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode())")"
  for k in $threads; do
    for model in $models; do
      echo "[$setting, $k thread(s), $model] lockstep, $steps cycles" >&2
      torch="$prefix LD_PRELOAD=$tcmalloc $python $root/bench/torch_step_server.py $torch_bench --model $model"
      servers=("torch=$torch --threads $k --warmup $warmup")
      [[ "$k" -gt 1 ]] && servers+=("torch_1+$k=$torch --threads 1 --openblas-threads $k --warmup $warmup")
      servers+=("pipeforge=$prefix $bench --serve --models $model --threads $k --warmup $warmup")
      "$python" "$root/bench/lockstep.py" --steps "$steps" "${servers[@]}" |
        sed "s/^{/{\"setting\": \"$setting\", \"core\": \"$core\", \"k\": $k, \"model\": \"$model\", /" >>"$results"
    done
  done
done
echo "load after: $(uptime)" >&2

"$python" - "$results" <<'EOF'
import json
import statistics
import sys

names = {"env": "environment as it is", "avx512": "env -u OPENBLAS_CORETYPE", "avx2": "as an AVX2 CPU"}
print("| OpenBLAS setting (kernel) | model | threads | torch ms | torch 1 thr + OpenBLAS K ms | best torch ms "
      "| Pipeforge ms | Pipeforge / best torch | cycles at or under 1 |")
print("|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    k = r["k"]
    torch, torch1, pf = r["torch"], r.get(f"torch_1+{k}"), r["pipeforge"]
    ms = lambda times: statistics.median(times) * 1e3  # noqa: E731
    best = torch1 if torch1 and ms(torch1) < ms(torch) else torch
    ratios = [p / b for p, b in zip(pf, best)]
    t1_text = f"{ms(torch1):.1f}" if torch1 else "-"
    print(f"| {names.get(r['setting'], r['setting'])} ({r['core']}) | {r['model']} | {k} | {ms(torch):.1f} | "
          f"{t1_text} | {ms(best):.1f} | {ms(pf):.1f} | {statistics.median(ratios):.2f} | "
          f"{sum(x <= 1 for x in ratios)}/{len(ratios)} |")
EOF
