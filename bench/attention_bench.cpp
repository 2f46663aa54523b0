// Times causal attention on the CPU backend, f32, as the op-by-op chain of examples/gpt.pf (matmul, scale, mask,
// softmax, matmul) and as the fused attention op, forward and forward + backward (autodiff of a weighted sum of
// the output), and prints one markdown table. Both forms are checked against each other before any timing.
//
//   make -C build-perf attention_bench && build-perf/bench/attention_bench --reps 5 --threads 2
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/executor.h"
#include "bench/median.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/pass.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Shape4 {
  int64_t b, h, t, d;
};

// loss = sum(attention(q, k, v) * w) over [B,H,T,D], spelled out op by op
// (`fused` false) or as one attention op.
std::string model_text(const Shape4& s, bool fused) {
  const std::string t = fmt::format("f32[{},{},{},{}]", s.b, s.h, s.t, s.d);
  const std::string scores = fmt::format("f32[{},{},{},{}]", s.b, s.h, s.t, s.t);
  std::string body;
  if (fused) {
    body = fmt::format("  %o, %lse = attention %q, %k, %v causal=true : {}, f32[{},{},{}]\n", t, s.b, s.h, s.t);
  } else {
    body = fmt::format(
        "  %s = matmul %q, %k transpose_b=true : {1}\n"
        "  %hd = dim_value value={2} : f32[]\n"
        "  %scale = rsqrt %hd : f32[]\n"
        "  %ss = mul %s, %scale : {1}\n"
        "  %mask = causal_mask : bool[{3},{3}]\n"
        "  %ninf = constant value=-inf : f32[]\n"
        "  %sm = where %mask, %ss, %ninf : {1}\n"
        "  %p = softmax %sm axis=-1 : {1}\n"
        "  %o = matmul %p, %v : {0}\n",
        t, scores, s.d, s.t);
  }
  return fmt::format(
      "graph @attn(%q: {0}, %k: {0}, %v: {0}, %w: {0}) -> f32[] {{\n{1}"
      "  %ow = mul %o, %w : {0}\n  %loss = reduce_sum %ow axes=[0,1,2,3] : f32[]\n  return %loss\n}}\n",
      t, body);
}

/// One form of the model, compiled once: its forward and backward executors.
struct Compiled {
  pf::Module module;
  pf::GradientProgram program;
  std::unique_ptr<pf::cpu::Executor> fwd, bwd;
  float seed = 1;

  Compiled(const Shape4& s, bool fused, std::vector<std::vector<float>>& inputs)
      : module(pf::parse_module_text("attn.pf", model_text(s, fused))) {
    pf::verify_module(module, {}, pf::VerifyOptions{true});
    pf::AutodiffOptions options;
    options.wrt_inputs = {"q", "k", "v"};
    program = pf::differentiate(module, {}, options);
    fwd = std::make_unique<pf::cpu::Executor>(module.graph(), pf::DimBinding{}, pf::DType::f32);
    for (int a = 0; a < 4; ++a) fwd->bind_input(a, inputs[a].data());
    bwd = std::make_unique<pf::cpu::Executor>(*module.find_function(program.backward), pf::DimBinding{},
                                              pf::DType::f32);
  }

  void forward() { fwd->run(); }
  void backward() {
    bwd->bind_input(0, &seed);
    for (size_t i = 0; i < program.stash.size(); ++i)
      bwd->bind_input(static_cast<int>(1 + i), fwd->output(program.original_results + static_cast<int>(i)));
    bwd->run();
  }
  const float* grad(int i) const { return static_cast<const float*>(bwd->output(i)); }
};

double seconds(const std::function<void()>& f, int reps) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto start = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return pf::bench::median(t);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU attention: the op-by-op chain against the fused op"};
  int reps = 5, threads = 1;
  app.add_option("--reps", reps, "timed runs per row (the median is printed)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "the CPU device's thread budget")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  pf::cpu::set_cpu_threads(threads);

  const std::vector<Shape4> shapes = {{1, 12, 256, 64}, {1, 12, 1024, 64}, {4, 12, 512, 64}};
  fmt::print("| B,H,T,D | chain fwd ms | fused fwd ms | fwd speed-up | chain fwd+bwd ms | fused fwd+bwd ms | "
             "fwd+bwd speed-up | max rel. diff |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  for (const Shape4& s : shapes) {
    const int64_t n = s.b * s.h * s.t * s.d;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<std::vector<float>> inputs(4, std::vector<float>(static_cast<size_t>(n)));
    for (auto& v : inputs)
      for (float& x : v) x = u(rng);
    Compiled chain(s, false, inputs), fused(s, true, inputs);
    // The reference check: loss and the three gradients agree before anything is timed.
    chain.forward();
    chain.backward();
    fused.forward();
    fused.backward();
    double worst = 0;
    for (int g = 0; g < 3; ++g) {
      double scale = 1e-30;
      for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(static_cast<double>(chain.grad(g)[i])));
      for (int64_t i = 0; i < n; ++i)
        worst = std::max(worst, std::fabs(static_cast<double>(fused.grad(g)[i]) - chain.grad(g)[i]) / scale);
    }
    if (!(worst < 1e-4)) {
      std::cerr << fmt::format("attention_bench: fused and chain gradients differ by {:.3g} at {},{},{},{}\n", worst,
                               s.b, s.h, s.t, s.d);
      return 1;
    }
    const double chain_fwd = seconds([&] { chain.forward(); }, reps);
    const double fused_fwd = seconds([&] { fused.forward(); }, reps);
    const double chain_all = seconds([&] { chain.forward(); chain.backward(); }, reps);
    const double fused_all = seconds([&] { fused.forward(); fused.backward(); }, reps);
    fmt::print("| {},{},{},{} | {:.1f} | {:.1f} | {:.2f}x | {:.1f} | {:.1f} | {:.2f}x | {:.1e} |\n", s.b, s.h, s.t, s.d,
               chain_fwd * 1e3, fused_fwd * 1e3, chain_fwd / fused_fwd, chain_all * 1e3, fused_all * 1e3,
               chain_all / fused_all, worst);
  }
  fmt::print("\n{} thread(s), f32 products by {}\n", threads, pf::cpu::sgemm_kernel_name());
  return 0;
}
