#!/usr/bin/env bash
# Everything that needs a GPU, in one go, most telling first, each part's log written as it finishes (so a run cut
# short still says what it got to): the GPU's name, the CUDA tests, the GPT-2 small training step against
# PyTorch (fused attention and the chain), PyTorch's fused attention alone at the step's shape, and
# compute-sanitizer over the kernel and executor tests.
#
#   bench/gpu_suite.sh BUILD_DIR LOG_DIR [steps]
#
# BUILD_DIR holds a build with the CUDA backend (tests/cuda, bench/gpu_step_bench); python3 must have PyTorch.
set -u
build=${1:?usage: bench/gpu_suite.sh BUILD_DIR LOG_DIR [steps]}
logs=${2:?usage: bench/gpu_suite.sh BUILD_DIR LOG_DIR [steps]}
steps=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$logs"

section() { echo "== $* ($(date +%T))"; }

{
  section gpu
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
} >"$logs/gpu.txt" 2>&1

{
  for t in "$build"/tests/cuda/cuda_*_test; do
    section "$(basename "$t")"
    timeout 180 "$t" --gtest_brief=1 2>&1 | tail -n 60
    echo "exit ${PIPESTATUS[0]}"
  done
} >"$logs/tests.txt" 2>&1

{
  section gpu_step_bench
  timeout 240 "$build/bench/gpu_step_bench" "$steps"
  section "torch, fused attention (SDPA)"
  timeout 120 python3 "$here/torch_gpu_bench.py" --steps "$steps" --sdpa
  section "torch, matmul + masked softmax"
  timeout 120 python3 "$here/torch_gpu_bench.py" --steps "$steps"
  section "torch SDPA alone, B=8 H=12 T=1024 D=64 causal, ms for 12 layers"
  timeout 60 python3 - <<'EOF'
import torch, torch.nn.functional as F
for dt in (torch.float32, torch.bfloat16):
    q, k, v = (torch.randn(8, 12, 1024, 64, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
    g = torch.randn(8, 12, 1024, 64, device="cuda", dtype=dt)
    def fwd(): return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    def fwd_bwd(): fwd().backward(g)
    for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        for _ in range(3): fn()
        times = []
        for _ in range(10):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); [fn() for _ in range(12)]; b.record(); torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        print(f"{dt} {name}: {sorted(times)[5]:.2f} ms")
EOF
} >"$logs/bench.txt" 2>&1

{
  for run in "memcheck op_table" "racecheck op_table" "memcheck gemm_fusion" "memcheck executor"; do
    set -- $run
    section "compute-sanitizer --tool $1 cuda_$2_test"
    timeout 100 compute-sanitizer --tool "$1" --error-exitcode 9 "$build/tests/cuda/cuda_$2_test" --gtest_brief=1 \
      2>&1 | tail -n 25
    echo "exit ${PIPESTATUS[0]}"
  done
} >"$logs/sanitizer.txt" 2>&1
