// The products of one drawn token of a GPT-2 small-shaped model (one row against each weight matrix of 12 blocks
// of width 768, then a tied 50,257-token head): gemm() as sampling calls it (the own kernel's products of a few
// rows, reading the weights unpacked) against OpenBLAS's sgemm, and against reading the same bytes with nothing
// else done (a streaming sum). The weights (0.5 GB) do not fit any cache, as in sampling. With --rows m, m
// tokens side by side (samples decoded together): m rows against each weight. Prints one table: median ms per
// step, the weights' GB/s, and the share of the streaming rate.
//
//   make -C build decode_gemm_bench && build/bench/decode_gemm_bench --reps 9 [--threads 2] [--rows 4]
#include <CLI/CLI.hpp>
#include <fmt/format.h>

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

constexpr int64_t kBlocks = 12, kWidth = 768, kVocabulary = 50257;

/// One weight matrix a token's row meets: B [k, n] as stored, or the tied
/// head's table [n, k] read transposed.
struct Weight {
  int64_t k, n;
  bool transposed;
  std::vector<float> values;
};

std::vector<Weight> gpt2_small_weights() {
  std::vector<Weight> out;
  for (int64_t b = 0; b < kBlocks; ++b)
    for (const auto& [k, n] : {std::pair{kWidth, 3 * kWidth}, {kWidth, kWidth}, {kWidth, 4 * kWidth}, {4 * kWidth, kWidth}})
      out.push_back({k, n, false, std::vector<float>(static_cast<size_t>(k * n), 0.01f)});
  out.push_back({kWidth, kVocabulary, true, std::vector<float>(static_cast<size_t>(kWidth * kVocabulary), 0.01f)});
  return out;
}

/// One step's products: every weight once, `rows` rows of 768 (or 3072) against it.
double step_seconds(const std::vector<Weight>& weights, int64_t rows, std::vector<float>& x, std::vector<float>& y) {
  const auto start = Clock::now();
  for (const Weight& w : weights)
    pf::cpu::gemm(false, w.transposed, rows, w.n, w.k, x.data(), w.k, w.values.data(), w.transposed ? w.k : w.n,
                  y.data(), w.n);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// The same bytes read with nothing else done: a sum of every weight.
double streaming_seconds(const std::vector<Weight>& weights) {
  const auto start = Clock::now();
  float sum = 0;
  for (const Weight& w : weights) {
    float lanes[16] = {};
    const float* v = w.values.data();
    const auto size = static_cast<int64_t>(w.values.size());
    for (int64_t i = 0; i + 16 <= size; i += 16)
      for (int l = 0; l < 16; ++l) lanes[l] += v[i + l];
    for (float l : lanes) sum += l;
  }
  volatile float keep = sum;
  (void)keep;
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"one drawn token's products of a GPT-2 small shape: the own kernel, OpenBLAS and a streaming read"};
  int reps = 9, threads = 1;
  int64_t rows = 1;
  app.add_option("--reps", reps, "tokens timed per way (the median is printed)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "threads of the CPU kernels")->check(CLI::PositiveNumber);
  app.add_option("--rows", rows, "tokens side by side: rows against each weight")->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);
  pf::cpu::set_cpu_threads(threads);

  const std::vector<Weight> weights = gpt2_small_weights();
  double bytes = 0;
  for (const Weight& w : weights) bytes += 4.0 * static_cast<double>(w.values.size());
  std::vector<float> x(static_cast<size_t>(rows * 4 * kWidth), 0.5f), y(static_cast<size_t>(rows * kVocabulary));

  // The ways in turn, token by token, so that the machine's load falls on all alike.
  std::vector<double> own, openblas, stream;
  for (int r = 0; r < reps + 1; ++r) {
    pf::cpu::use_openblas_sgemm(false);
    const double a = step_seconds(weights, rows, x, y);
    pf::cpu::use_openblas_sgemm(true);
    const double b = step_seconds(weights, rows, x, y);
    const double c = streaming_seconds(weights);
    if (r == 0) continue;  // the first touches every page
    own.push_back(a), openblas.push_back(b), stream.push_back(c);
  }
  pf::cpu::use_openblas_sgemm(false);

  const double limit = pf::bench::median(stream);
  fmt::print("{:.0f} MB of weights a step of {} token(s), {} thread(s), median of {}\n\n", bytes / 1e6, rows, threads,
             reps);
  fmt::print("| way | ms per step | GB/s | of the streaming read |\n|---|---:|---:|---:|\n");
  const std::string own_way = std::string("pipeforge ") + pf::cpu::sgemm_kernel_name() +
                              (rows <= pf::cpu::kSgemmFewRows ? ", few rows" : ", blocked");
  for (const auto& [way, samples] : {std::pair<std::string, const std::vector<double>*>{own_way, &own},
                                     {"openblas sgemm", &openblas},
                                     {"streaming read (the limit)", &stream}}) {
    const double s = pf::bench::median(*samples);
    fmt::print("| {} | {:.2f} | {:.1f} | {:.0f}% |\n", way, 1e3 * s, bytes / s / 1e9, 100 * limit / s);
  }
  return 0;
}
