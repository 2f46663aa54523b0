// Times the f32 GEMMs of the reference MLP and GPT steps through OpenBLAS and through each of Pipeforge's own
// sgemms this CPU runs (AVX-512, AVX2, SSE2, and the bf16 products' AVX-512 BF16 and AMX kernels), calling them in
// turn product by product, and prints one markdown table: GFLOP/s of each, the chosen f32 kernel's time over
// OpenBLAS's, and each own kernel against the peak of its instruction set measured in the same run (register-only
// loops of fused multiply-adds, of bf16 dot products, or of AMX tile products).
//
// The last columns time the chosen kernel again on a B packed beforehand, as a
// pipeline stage reads a weight it keeps packed through a step.
//
//   make -C build-perf gemm_bench && build-perf/bench/gemm_bench --reps 9
//   PF_CPU_ISA=avx2 build-perf/bench/gemm_bench   (as if the CPU lacked AVX-512)
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/sgemm.h"
#include "bench/median.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// One product of a training step: C[m,n] = op(A)[m,k] op(B)[k,n].
struct Product {
  std::string what;
  bool trans_a, trans_b;
  int64_t m, n, k;
  bool b_is_weight = true;  // B a layer's weight (kept packed by a pipeline stage), not an activation or gradient
};

// The MLP (784-4096-4096-4096-10, batch 256; weights [in, out]) and the GPT
// (width 512, 1024 tokens, vocabulary 8192, tied head) of bench/RESULTS.md.
std::vector<Product> products() {
  return {
      {"mlp 4096x4096 forward", false, false, 256, 4096, 4096},
      {"mlp 4096x4096 input grad", false, true, 256, 4096, 4096},
      {"mlp 4096x4096 weight grad", true, false, 4096, 4096, 256, false},
      {"mlp 784x4096 forward", false, false, 256, 4096, 784},
      {"mlp 784x4096 weight grad", true, false, 784, 4096, 256, false},
      {"gpt qkv forward", false, false, 1024, 1536, 512},
      {"gpt qkv input grad", false, true, 1024, 512, 1536},
      {"gpt qkv weight grad", true, false, 512, 1536, 1024, false},
      {"gpt mlp down forward", false, false, 1024, 512, 2048},
      {"gpt head (tied) forward", false, true, 1024, 8192, 512},
      {"gpt head input grad", false, false, 1024, 512, 8192},
      {"gpt head weight grad", true, false, 8192, 512, 1024, false},
      {"gpt attention q k^T", false, true, 128, 128, 64, false},
      // A pipeline's micro-batch (pipeline_bench: 256 / 8 = 32 rows of the
      // MLP): each weight is packed for an eighth of the rows it serves at
      // 256, and the packing, not the register tile, sets the pace.
      {"mlp 4096x4096 forward, m = 32", false, false, 32, 4096, 4096},
      {"mlp 4096x4096 input grad, m = 32", false, true, 32, 4096, 4096},
      {"mlp 4096x4096 weight grad, m = 32", true, false, 4096, 4096, 32, false},
  };
}

/// Fused multiply-adds on `kRegs` independent registers, nothing else: what
/// one core can do with vectors of `Lanes` floats.
constexpr int64_t kPeakIters = 20'000'000;

__attribute__((target("avx512f"), noinline)) double avx512_fma_peak_gflops() {
  constexpr int kRegs = 24;
  __m512 acc[kRegs];
  for (int i = 0; i < kRegs; ++i) acc[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-6f);
  const Clock::time_point start = Clock::now();
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < kRegs; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  const double seconds = seconds_since(start);
  __m512 sum = acc[0];
  for (int i = 1; i < kRegs; ++i) sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  volatile float sink = lanes[0];  // keeps the loop from being optimised away
  (void)sink;
  return 2.0 * 16 * kRegs * static_cast<double>(kPeakIters) / seconds / 1e9;
}

// Each dot-product instruction: 16 lanes, each two products and their sums.
__attribute__((target("avx512f,avx512bf16"), noinline)) double bf16_dot_peak_gflops() {
  constexpr int kRegs = 24;  // as many as the bf16 tile's accumulators
  __m512 acc[kRegs];
  for (int i = 0; i < kRegs; ++i) acc[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3580);  // 1, 2^-20
  const Clock::time_point start = Clock::now();
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < kRegs; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
  const double seconds = seconds_since(start);
  __m512 sum = acc[0];
  for (int i = 1; i < kRegs; ++i) sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  volatile float sink = lanes[0];
  (void)sink;
  return 4.0 * 16 * kRegs * static_cast<double>(kPeakIters) / seconds / 1e9;
}

// Each tile product: 16 x 16 sums of 32 products, into four tiles in turn
// (as many as the AMX kernel's block of C), on tiles of zeros.
__attribute__((target("amx-tile,amx-bf16"), noinline)) double amx_peak_gflops() {
  constexpr int64_t kIters = kPeakIters / 10;
  struct {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t bytes_per_row[16] = {64, 64, 64, 64, 64, 64};
    uint8_t rows[16] = {16, 16, 16, 16, 16, 16};
  } config;
  _tile_loadconfig(&config);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  const Clock::time_point start = Clock::now();
  for (int64_t it = 0; it < kIters; ++it) {
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 5);
    _tile_dpbf16ps(2, 4, 5);
    _tile_dpbf16ps(3, 4, 5);
  }
  const double seconds = seconds_since(start);
  _tile_release();
  return 2.0 * 16 * 16 * 32 * 4 * static_cast<double>(kIters) / seconds / 1e9;
}

__attribute__((target("avx2,fma"), noinline)) double avx2_fma_peak_gflops() {
  constexpr int kRegs = 12;  // as many as the AVX2 tile's accumulators
  __m256 acc[kRegs];
  for (int i = 0; i < kRegs; ++i) acc[i] = _mm256_set1_ps(1e-3f * static_cast<float>(i));
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-6f);
  const Clock::time_point start = Clock::now();
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < kRegs; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  const double seconds = seconds_since(start);
  __m256 sum = acc[0];
  for (int i = 1; i < kRegs; ++i) sum = _mm256_add_ps(sum, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  volatile float sink = lanes[0];
  (void)sink;
  return 2.0 * 8 * kRegs * static_cast<double>(kPeakIters) / seconds / 1e9;
}

/// One way to compute a product: OpenBLAS, or an own kernel called directly.
struct Contender {
  pf::cpu::SgemmKernel kernel;
  std::vector<double> seconds;
};

void run(pf::cpu::SgemmKernel kernel, const Product& p, const float* a, int64_t lda, const float* b, int64_t ldb,
         float* c) {
  using pf::cpu::SgemmKernel;
  switch (kernel) {
    case SgemmKernel::openblas:
      pf::cpu::use_openblas_sgemm(true);
      pf::cpu::gemm(p.trans_a, p.trans_b, p.m, p.n, p.k, a, lda, b, ldb, c, p.n);
      pf::cpu::use_openblas_sgemm(false);
      return;
    case SgemmKernel::avx512: pf::cpu::sgemm_avx512(p.trans_a, p.trans_b, p.m, p.n, p.k, a, lda, b, ldb, false, c, p.n); return;
    case SgemmKernel::avx2: pf::cpu::sgemm_avx2(p.trans_a, p.trans_b, p.m, p.n, p.k, a, lda, b, ldb, false, c, p.n); return;
    case SgemmKernel::sse2: pf::cpu::sgemm_sse2(p.trans_a, p.trans_b, p.m, p.n, p.k, a, lda, b, ldb, false, c, p.n); return;
    case SgemmKernel::avx512_bf16:
      pf::cpu::sgemm_bf16(p.trans_a, p.trans_b, p.m, p.n, p.k, a, lda, b, ldb, false, c, p.n);
      return;
    case SgemmKernel::amx_bf16:
      pf::cpu::sgemm_amx_bf16(p.trans_a, p.trans_b, p.m, p.n, p.k, a, lda, b, ldb, false, c, p.n);
      return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using pf::cpu::CpuIsa;
  using pf::cpu::SgemmKernel;
  CLI::App app{"Times the MLP's and GPT's GEMMs: OpenBLAS against each of Pipeforge's own sgemms on this CPU"};
  int reps = 9;
  bool sse2 = false;
  app.add_option("--reps", reps, "timed calls of each kernel per product (the median is reported)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--sse2", sse2, "also time the SSE2 kernel (for CPUs without AVX2; slow)");
  CLI11_PARSE(app, argc, argv);
  const CpuIsa isa = pf::cpu::cpu_isa();
  pf::cpu::set_cpu_threads(1);
  std::vector<Contender> contenders{{SgemmKernel::openblas, {}}};
  for (SgemmKernel k : {SgemmKernel::avx512, SgemmKernel::avx2, SgemmKernel::sse2})
    if (pf::cpu::sgemm_kernel_isa(k) <= isa && (k != SgemmKernel::sse2 || sse2 || isa == CpuIsa::sse2))
      contenders.push_back({k, {}});
  if (pf::cpu::cpu_has_bf16_dot()) contenders.push_back({SgemmKernel::avx512_bf16, {}});
  if (isa == CpuIsa::amx) contenders.push_back({SgemmKernel::amx_bf16, {}});
  std::vector<double> peak512, peak256, peak_bf16, peak_amx;
  std::cout << fmt::format("instruction set {} (PF_CPU_ISA caps it); OpenBLAS {} kernel; 1 thread; {} calls of each, "
                           "in turn\n\n",
                           pf::cpu::isa_name(isa), pf::cpu::blas_core_name(), reps);
  std::string header = "| product | layout | m x n x k | OpenBLAS GFLOP/s |", rule = "|---|---|---|---:|";
  for (size_t i = 1; i < contenders.size(); ++i) {
    header += fmt::format(" {} GFLOP/s | of its FMA peak |", pf::cpu::sgemm_kernel_label(contenders[i].kernel));
    rule += "---:|---:|";
  }
  std::cout << header << " chosen / OpenBLAS time | chosen on B packed once GFLOP/s | packed once / each time |\n"
            << rule << "---:|---:|---:|\n";
  for (const Product& p : products()) {
    const int64_t lda = p.trans_a ? p.m : p.k, ldb = p.trans_b ? p.k : p.n;
    std::vector<float> a(static_cast<size_t>(p.m * p.k), 0.5f), b(static_cast<size_t>(p.k * p.n), 0.25f),
        c(static_cast<size_t>(p.m * p.n));
    for (Contender& x : contenders) x.seconds.clear();
    for (int rep = -1; rep < reps; ++rep)  // the first round warms up
      for (Contender& x : contenders) {
        const Clock::time_point start = Clock::now();
        run(x.kernel, p, a.data(), lda, b.data(), ldb, c.data());
        if (rep >= 0) x.seconds.push_back(seconds_since(start));
      }
    if (isa >= CpuIsa::avx512) peak512.push_back(avx512_fma_peak_gflops());
    if (isa >= CpuIsa::avx2) peak256.push_back(avx2_fma_peak_gflops());
    if (pf::cpu::cpu_has_bf16_dot()) peak_bf16.push_back(bf16_dot_peak_gflops());
    if (isa == CpuIsa::amx) peak_amx.push_back(amx_peak_gflops());
    const double flops = 2.0 * static_cast<double>(p.m * p.n * p.k);
    const double openblas = pf::bench::median(contenders[0].seconds);
    std::string row = fmt::format("| {} | {}{} | {}x{}x{} | {:.1f} |", p.what, p.trans_a ? 'T' : 'N',
                                  p.trans_b ? 'T' : 'N', p.m, p.n, p.k, flops / openblas / 1e9);
    const SgemmKernel chosen = pf::cpu::sgemm_kernel_for(isa, p.n);
    double chosen_seconds = openblas;
    for (size_t i = 1; i < contenders.size(); ++i) {
      const double t = pf::bench::median(contenders[i].seconds), gflops = flops / t / 1e9;
      const SgemmKernel k = contenders[i].kernel;
      const double peak = k == SgemmKernel::avx512        ? peak512.back()
                          : k == SgemmKernel::avx2        ? peak256.back()
                          : k == SgemmKernel::avx512_bf16 ? peak_bf16.back()
                          : k == SgemmKernel::amx_bf16    ? peak_amx.back()
                                                          : 0;
      row += peak > 0 ? fmt::format(" {:.1f} | {:.0f}% |", gflops, 100 * gflops / peak) : fmt::format(" {:.1f} | - |", gflops);
      if (k == chosen) chosen_seconds = t;
    }
    row += fmt::format(" {:.3f} |", chosen_seconds / openblas);
    // As a pipeline stage keeps a weight packed through a step (packed_weights.h):
    // every micro-batch after the first reads B's panels as they are.
    if (chosen == SgemmKernel::openblas || !p.b_is_weight) {
      std::cout << row << " - | - |\n";
      continue;
    }
    const pf::cpu::SgemmPackedOps& ops = pf::cpu::sgemm_packed_ops(chosen);
    const pf::cpu::AlignedFloats packed = pf::cpu::aligned_floats(ops.floats(p.n, p.k));
    ops.pack(p.trans_b, b.data(), ldb, p.n, p.k, 0, p.k, packed.get());
    std::vector<double> packed_seconds;
    for (int rep = -1; rep < reps; ++rep) {
      const Clock::time_point start = Clock::now();
      ops.product(p.trans_a, p.m, p.n, p.k, a.data(), lda, pf::cpu::PackedB{packed.get(), ops.padded_cols(p.n), 0},
                  false, c.data(), p.n);
      if (rep >= 0) packed_seconds.push_back(seconds_since(start));
    }
    const double packed_t = pf::bench::median(packed_seconds);
    std::cout << row << fmt::format(" {:.1f} | {:.3f} |\n", flops / packed_t / 1e9, packed_t / chosen_seconds);
  }
  std::cout << "\nFMA peak of one core, measured after each product (median):";
  if (!peak512.empty()) std::cout << fmt::format(" AVX-512 {:.1f} GFLOP/s;", pf::bench::median(peak512));
  if (!peak256.empty()) std::cout << fmt::format(" AVX2 {:.1f} GFLOP/s;", pf::bench::median(peak256));
  if (!peak_bf16.empty())
    std::cout << fmt::format(" AVX-512 BF16 dot products {:.1f} GFLOP/s;", pf::bench::median(peak_bf16));
  if (!peak_amx.empty()) std::cout << fmt::format(" AMX bf16 tiles {:.1f} GFLOP/s;", pf::bench::median(peak_amx));
  std::cout << " \"chosen\" is the kernel gemm() takes for the product at this instruction set\n";
}
