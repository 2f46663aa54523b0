// Times one training step of GPT-2 small (examples/gpt.pf at its declared dims: B=8, T=1024, L=12, C=768,
// V=50257) on one GPU, in f32 (TF32 tensor cores on) and in bf16 (f32 master weights), and prints one markdown
// table: median ms per step, tokens/s, and model FLOP utilisation against the bf16 and TF32 cuBLAS matmul peaks
// measured in the same run with a large GEMM.
//
//   cmake --build build --target gpu_step_bench && build/bench/gpu_step_bench [steps]
//
// The step is Pipeline::train_step of a one-stage plan compiled for h100:1 (the path `pipeforge run` takes):
// forward, loss, backward, the global gradient norm and an AdamW step, all on the device. Model FLOPs per step
// are 6 * parameters * tokens plus the attention products, 12 * L * T * C * tokens (full T x T, as PaLM
// counts them). bench/torch_gpu_bench.py prints the same columns for PyTorch on the same GPU.
// After the table, for each precision: the step without its update, and where a step's device time goes, by op
// kind and by call, from a few more steps with every op timed by CUDA events (Pipeline::set_profile).
// Without a GPU it prints "no CUDA device" and exits 0.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/device.h"
#include "bench/median.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"
#include "ir/parser.h"
#include "plan/plan.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"

namespace {

using Clock = std::chrono::steady_clock;

using pf::bench::median;

/// The best rate of a few n^3 GEMMs through cuBLAS: bf16 inputs and outputs with f32 accumulation, or f32 on
/// TF32 tensor cores. What a matmul-bound step could reach on this GPU.
double gemm_peak_flops(bool bf16) {
  constexpr int n = 8192;
  const size_t elements = static_cast<size_t>(n) * n;
  const size_t bytes = elements * (bf16 ? 2 : 4);
  void *a = nullptr, *b = nullptr, *c = nullptr;
  PF_CUDA_CHECK(cudaMalloc(&a, bytes));
  PF_CUDA_CHECK(cudaMalloc(&b, bytes));
  PF_CUDA_CHECK(cudaMalloc(&c, bytes));
  // Zeros would let the GPU idle its multipliers (and draw less power); any bytes that make finite numbers do:
  // 0x3c3c is about 0.009 as a bf16, 0x3c3c3c3c about 0.011 as an f32.
  PF_CUDA_CHECK(cudaMemset(a, 0x3c, bytes));
  PF_CUDA_CHECK(cudaMemset(b, 0x3c, bytes));
  cublasHandle_t handle = nullptr;
  PF_CUDA_CHECK(cublasCreate(&handle));
  const float alpha = 1, beta = 0;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
  cudaEvent_t start = nullptr, stop = nullptr;
  PF_CUDA_CHECK(cudaEventCreate(&start));
  PF_CUDA_CHECK(cudaEventCreate(&stop));
  double best = 1e30;
  for (int rep = 0; rep < 8; ++rep) {
    PF_CUDA_CHECK(cudaEventRecord(start));
    PF_CUDA_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, type, n, b, type, n, &beta, c,
                               type, n, compute, CUBLAS_GEMM_DEFAULT));
    PF_CUDA_CHECK(cudaEventRecord(stop));
    PF_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PF_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (rep > 0) best = std::min(best, ms * 1e-3);  // the first run loads the kernel
  }
  PF_CUDA_CHECK(cudaEventDestroy(start));
  PF_CUDA_CHECK(cudaEventDestroy(stop));
  PF_CUDA_CHECK(cublasDestroy(handle));
  PF_CUDA_CHECK(cudaFree(a));
  PF_CUDA_CHECK(cudaFree(b));
  PF_CUDA_CHECK(cudaFree(c));
  return 2.0 * n * n * static_cast<double>(n) / best;
}

struct Row {
  std::string precision;
  double median_ms = 0;
  double tokens_per_s = 0;
  double model_flops_per_s = 0;
  double peak = 0;
  double first_loss = 0, last_loss = 0;
  double forward_backward_ms = 0;  // the step without its optimizer update
  // Where a step's device time goes (per-op CUDA events over profiled steps), ms per step, largest first.
  std::vector<std::pair<std::string, double>> kinds, ops;
  double kernel_ms = 0;
};

constexpr int kProfiledSteps = 3;

/// The profile of a few steps, summed by op kind and by call (kind and operand types: a layer's ops add up).
void profile_steps(pf::Pipeline& pipeline, const std::vector<std::pair<std::string, const void*>>& inputs,
                   Row& row) {
  pipeline.reset_profile();
  pipeline.set_profile(true);
  for (int i = 0; i < kProfiledSteps; ++i) pipeline.train_step(inputs);
  pipeline.set_profile(false);
  std::map<std::string, double> kinds, ops;
  for (const pf::backend::OpTime& t : pipeline.op_times(0)) {
    const double ms = t.seconds * 1e3 / kProfiledSteps;
    kinds[std::string(pf::op_name(t.kind))] += ms;
    ops[t.function + ": " + t.text] += ms;
    row.kernel_ms += ms;
  }
  auto largest_first = [](const std::map<std::string, double>& m) {
    std::vector<std::pair<std::string, double>> v(m.begin(), m.end());
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    return v;
  };
  row.kinds = largest_first(kinds);
  row.ops = largest_first(ops);
}

Row time_steps(const std::string& dtype, double peak, int steps) {
  const std::string file = std::string(PF_SOURCE_DIR) + "/examples/gpt.pf";
  pf::Module model = pf::parse_module(pf::read_source_file(file));
  const pf::DimBinding binding = model.binding();  // the declared dims: GPT-2 small, B=8, T=1024
  pf::verify_module(model, binding, pf::VerifyOptions{true});
  const int64_t batch = binding.at("B"), seq = binding.at("T"), layers = binding.at("L"), width = binding.at("C");
  const int64_t vocab = binding.at("V");
  pf::CompileOptions co;
  co.devices = "h100:1";
  co.microbatches = 1;
  co.dtype = dtype;
  const pf::Plan plan = pf::compile_plan(std::move(model), binding, file, co).plan;

  pf::PipelineOptions options;
  options.train.optimizer = "adamw";
  options.train.lr = 1e-4;
  options.train.weight_decay = 0;
  options.allow_tf32 = true;  // f32 on tensor cores, as PyTorch with allow_tf32
  auto pipeline = pf::Pipeline::from_plan(plan, options);
  pipeline->initialize(0);
  pipeline->start();
  int64_t params = 0;
  std::set<std::string> seen;  // the tied embedding once
  for (pf::ParameterSet* set : pipeline->parameter_sets())
    for (const auto& e : set->entries())
      if (seen.insert(e.name).second) params += static_cast<int64_t>(e.value.size());

  std::mt19937 rng(0);
  std::vector<int32_t> tokens(static_cast<size_t>(batch * seq)), targets(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
    targets[i] = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  }
  const std::vector<std::pair<std::string, const void*>> inputs = {{"tokens", tokens.data()},
                                                                    {"targets", targets.data()}};
  Row row;
  row.precision = dtype == "bf16" ? "bf16 (f32 master weights)" : "f32 (TF32 matmuls)";
  row.first_loss = pipeline->train_step(inputs).loss;  // warm-up: first use of every kernel and allocation
  pipeline->train_step(inputs);
  std::vector<double> times;
  for (int i = 0; i < steps; ++i) {
    const Clock::time_point start = Clock::now();
    // Returns when the step's forward and backward are done; its optimizer
    // update is queued behind them and finishes within the next step, so
    // in steady state each timed interval holds one whole step.
    row.last_loss = pipeline->train_step(inputs).loss;
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  const double seconds = median(times);
  times.clear();
  for (int i = 0; i < steps; ++i) {
    const Clock::time_point start = Clock::now();
    pipeline->train_step(inputs, /*step_optimizer=*/false);
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  row.forward_backward_ms = median(times) * 1e3;
  profile_steps(*pipeline, inputs, row);
  const double tokens_per_step = static_cast<double>(batch * seq);
  const double flops = 6.0 * static_cast<double>(params) * tokens_per_step +
                       12.0 * static_cast<double>(layers * seq * width) * tokens_per_step;
  row.median_ms = seconds * 1e3;
  row.tokens_per_s = tokens_per_step / seconds;
  row.model_flops_per_s = flops / seconds;
  row.peak = peak;
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!pf::cuda::cuda_available(&why)) {
    fmt::print("no CUDA device ({})\n", why);
    return 0;
  }
  const int steps = argc > 1 ? std::max(1, std::stoi(argv[1])) : 10;
  try {
    cudaDeviceProp prop{};
    PF_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const double bf16_peak = gemm_peak_flops(true);
    const double tf32_peak = gemm_peak_flops(false);
    std::vector<Row> rows = {time_steps("f32", tf32_peak, steps), time_steps("bf16", bf16_peak, steps)};
    fmt::print("GPT-2 small (124M parameters), B=8, T=1024, one training step (AdamW) on {}; cuBLAS 8192^3 GEMM "
               "peaks measured in this run: bf16 {:.1f} TFLOP/s, TF32 {:.1f} TFLOP/s\n\n",
               prop.name, bf16_peak / 1e12, tf32_peak / 1e12);
    fmt::print("| precision | median ms/step | tokens/s | model TFLOP/s | GEMM peak (TFLOP/s) | MFU "
               "| loss first -> last |\n");
    fmt::print("|---|---:|---:|---:|---:|---:|---|\n");
    for (const Row& r : rows)
      fmt::print("| {} | {:.1f} | {:.0f} | {:.1f} | {:.1f} | {:.1f}% | {:.4f} -> {:.4f} |\n", r.precision, r.median_ms,
                 r.tokens_per_s, r.model_flops_per_s / 1e12, r.peak / 1e12, 100 * r.model_flops_per_s / r.peak,
                 r.first_loss, r.last_loss);
    for (const Row& r : rows) {
      fmt::print("\n{}: forward + backward {:.1f} ms of the {:.1f} ms step; kernels {:.1f} ms a step (CUDA events, "
                 "{} profiled steps)\n\n| op kind | ms per step | share of kernel time |\n|---|---:|---:|\n",
                 r.precision, r.forward_backward_ms, r.median_ms, r.kernel_ms, kProfiledSteps);
      for (size_t i = 0; i < std::min<size_t>(12, r.kinds.size()); ++i)
        fmt::print("| {} | {:.2f} | {:.1f}% |\n", r.kinds[i].first, r.kinds[i].second,
                   100 * r.kinds[i].second / r.kernel_ms);
      fmt::print("\n| call (all layers) | ms per step |\n|---|---:|\n");
      for (size_t i = 0; i < std::min<size_t>(20, r.ops.size()); ++i)
        fmt::print("| {} | {:.2f} |\n", r.ops[i].first, r.ops[i].second);
    }
  } catch (const pf::Error& e) {
    fmt::print(stderr, "{}", e.render());
    return 1;
  }
  return 0;
}
