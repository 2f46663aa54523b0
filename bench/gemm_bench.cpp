// Times the f32 GEMMs of the reference MLP and GPT steps through Pipeforge's own AVX-512 sgemm and through
// OpenBLAS, alternating call by call, and prints one markdown table: GFLOP/s of each, their ratio, and each
// against this core's FMA peak measured in the same run (a register-only loop of fused multiply-adds).
//
//   make -C build-perf gemm_bench && env -u OPENBLAS_CORETYPE build-perf/bench/gemm_bench --reps 9
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/sgemm_avx512.h"
#include "bench/median.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// One product of a training step: C[m,n] = op(A)[m,k] op(B)[k,n].
struct Product {
  std::string what;
  bool trans_a, trans_b;
  int64_t m, n, k;
};

// The MLP (784-4096-4096-4096-10, batch 256; weights [in, out]) and the GPT
// (width 512, 1024 tokens, vocabulary 8192, tied head) of bench/RESULTS.md.
std::vector<Product> products() {
  return {
      {"mlp 4096x4096 forward", false, false, 256, 4096, 4096},
      {"mlp 4096x4096 input grad", false, true, 256, 4096, 4096},
      {"mlp 4096x4096 weight grad", true, false, 4096, 4096, 256},
      {"mlp 784x4096 forward", false, false, 256, 4096, 784},
      {"mlp 784x4096 weight grad", true, false, 784, 4096, 256},
      {"gpt qkv forward", false, false, 1024, 1536, 512},
      {"gpt qkv input grad", false, true, 1024, 512, 1536},
      {"gpt qkv weight grad", true, false, 512, 1536, 1024},
      {"gpt mlp down forward", false, false, 1024, 512, 2048},
      {"gpt head (tied) forward", false, true, 1024, 8192, 512},
      {"gpt head input grad", false, false, 1024, 512, 8192},
      {"gpt head weight grad", true, false, 8192, 512, 1024},
      {"gpt attention q k^T", false, true, 128, 128, 64},
  };
}

/// Fused multiply-adds on 24 registers, nothing else: what one core can do.
__attribute__((target("avx512f"), noinline)) double fma_peak_gflops() {
  constexpr int64_t kIters = 20'000'000;
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-6f);
  const Clock::time_point start = Clock::now();
  for (int64_t it = 0; it < kIters; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  const double seconds = seconds_since(start);
  __m512 sum = acc[0];
  for (int i = 1; i < 24; ++i) sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  volatile float sink = lanes[0];  // keeps the loop from being optimised away
  (void)sink;
  return 2.0 * 16 * 24 * static_cast<double>(kIters) / seconds / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Times the MLP's and GPT's GEMMs: Pipeforge's AVX-512 sgemm against OpenBLAS"};
  int reps = 9;
  app.add_option("--reps", reps, "timed calls of each kernel per product (the median is reported)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (!pf::cpu::avx512_sgemm_supported()) {
    std::cout << "this CPU has no AVX-512: every f32 GEMM runs through OpenBLAS\n";
    return 0;
  }
  pf::cpu::set_cpu_threads(1);
  std::vector<double> peaks;
  std::cout << fmt::format("OpenBLAS {} kernel, 1 thread; {} calls of each, alternating\n\n", pf::cpu::blas_core_name(),
                           reps);
  std::cout << "| product | layout | m x n x k | OpenBLAS GFLOP/s | Pipeforge GFLOP/s | Pipeforge / OpenBLAS time | "
               "Pipeforge of FMA peak |\n|---|---|---|---:|---:|---:|---:|\n";
  for (const Product& p : products()) {
    const int64_t lda = p.trans_a ? p.m : p.k, ldb = p.trans_b ? p.k : p.n;
    std::vector<float> a(static_cast<size_t>(p.m * p.k), 0.5f), b(static_cast<size_t>(p.k * p.n), 0.25f),
        c(static_cast<size_t>(p.m * p.n));
    std::vector<double> times[2];
    for (int rep = -1; rep < reps; ++rep)  // the first round warms up
      for (int kernel = 0; kernel < 2; ++kernel) {
        pf::cpu::use_openblas_sgemm(kernel == 0);
        const Clock::time_point start = Clock::now();
        pf::cpu::gemm(p.trans_a, p.trans_b, p.m, p.n, p.k, a.data(), lda, b.data(), ldb, c.data(), p.n);
        if (rep >= 0) times[kernel].push_back(seconds_since(start));
      }
    peaks.push_back(fma_peak_gflops());
    const double flops = 2.0 * static_cast<double>(p.m * p.n * p.k);
    const double openblas = pf::bench::median(times[0]), ours = pf::bench::median(times[1]);
    std::cout << fmt::format("| {} | {}{} | {}x{}x{} | {:.1f} | {:.1f} | {:.3f} | {:.0f}% |\n", p.what,
                             p.trans_a ? 'T' : 'N', p.trans_b ? 'T' : 'N', p.m, p.n, p.k, flops / openblas / 1e9,
                             flops / ours / 1e9, ours / openblas, 100 * flops / ours / 1e9 / peaks.back());
  }
  pf::cpu::use_openblas_sgemm(false);
  std::cout << fmt::format("\nFMA peak of one core, measured after each product: median {:.1f} GFLOP/s\n",
                           pf::bench::median(peaks));
}
