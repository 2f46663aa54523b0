// Times causal attention on the CPU backend, f32, forward and forward + backward (autodiff of a weighted sum of the
// output), in four forms: on q, k, v of [B,H,T,D], the op-by-op chain of examples/gpt.pf (matmul, scale, mask,
// softmax, matmul) and the fused attention op; on q, k, v of [B,T,H,D] (as the qkv projection writes them), the
// fused op between head transposes (q, k, v to [B,H,T,D] and o back) and the fused op reading and writing
// [B,T,H,D] itself (layout="bthd"). Prints one markdown table; the chain and the fused op, and the transposes and
// the bthd op, are checked against each other before any timing.
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

enum class Form { chain, fused, transposed, bthd };

// loss = sum(attention(q, k, v) * w), spelled out op by op, as one attention
// op, as one between head transposes or as one of layout "bthd".
std::string model_text(const Shape4& s, Form form) {
  const std::string t = fmt::format("f32[{},{},{},{}]", s.b, s.h, s.t, s.d);
  const std::string rows = fmt::format("f32[{},{},{},{}]", s.b, s.t, s.h, s.d);  // [B,T,H,D]
  const std::string lse = fmt::format("f32[{},{},{}]", s.b, s.h, s.t);
  const std::string scores = fmt::format("f32[{},{},{},{}]", s.b, s.h, s.t, s.t);
  std::string body;
  std::string io = t;  // the type of q, k, v, o and w
  if (form == Form::fused) {
    body = fmt::format("  %o, %lse = attention %q, %k, %v causal=true : {}, {}\n", t, lse);
  } else if (form == Form::transposed) {
    io = rows;
    body = fmt::format(
        "  %qt = transpose %q perm=[0,2,1,3] : {0}\n  %kt = transpose %k perm=[0,2,1,3] : {0}\n"
        "  %vt = transpose %v perm=[0,2,1,3] : {0}\n"
        "  %ot, %lse = attention %qt, %kt, %vt causal=true : {0}, {1}\n"
        "  %o = transpose %ot perm=[0,2,1,3] : {2}\n",
        t, lse, rows);
  } else if (form == Form::bthd) {
    io = rows;
    body = fmt::format("  %o, %lse = attention %q, %k, %v causal=true layout=\"bthd\" : {}, {}\n", rows, lse);
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
      io, body);
}

/// One form of the model, compiled once: its forward and backward executors.
struct Compiled {
  pf::Module module;
  pf::GradientProgram program;
  std::unique_ptr<pf::cpu::Executor> fwd, bwd;
  float seed = 1;

  Compiled(const Shape4& s, Form form, std::vector<std::vector<float>>& inputs)
      : module(pf::parse_module_text("attn.pf", model_text(s, form))) {
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

// The largest difference between the gradients of q, k and v of two forms, relative to the largest of `want`'s.
double worst_difference(const Compiled& want, const Compiled& got, int64_t n) {
  double worst = 0;
  for (int g = 0; g < 3; ++g) {
    double scale = 1e-30;
    for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(static_cast<double>(want.grad(g)[i])));
    for (int64_t i = 0; i < n; ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(got.grad(g)[i]) - want.grad(g)[i]) / scale);
  }
  return worst;
}

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
  CLI::App app{"CPU attention: the op-by-op chain against the fused op, and head transposes against layout bthd"};
  int reps = 5, threads = 1;
  app.add_option("--reps", reps, "timed runs per row (the median is printed)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "the CPU device's thread budget")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  pf::cpu::set_cpu_threads(threads);

  const std::vector<Shape4> shapes = {{1, 12, 256, 64}, {1, 12, 1024, 64}, {4, 12, 512, 64}};
  fmt::print("| B,H,T,D | chain fwd ms | fused fwd ms | transposes + fused fwd ms | bthd fwd ms | bthd fwd speed-up | "
             "chain fwd+bwd ms | fused fwd+bwd ms | transposes + fused fwd+bwd ms | bthd fwd+bwd ms | "
             "bthd fwd+bwd speed-up | max rel. diff fused | max rel. diff bthd |\n");
  fmt::print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Shape4& s : shapes) {
    const int64_t n = s.b * s.h * s.t * s.d;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<std::vector<float>> inputs(4, std::vector<float>(static_cast<size_t>(n)));
    for (auto& v : inputs)
      for (float& x : v) x = u(rng);
    Compiled chain(s, Form::chain, inputs), fused(s, Form::fused, inputs), transposed(s, Form::transposed, inputs),
        bthd(s, Form::bthd, inputs);
    // The reference check: the three gradients agree before anything is timed (the transposes and bthd: to the bit).
    for (Compiled* c : {&chain, &fused, &transposed, &bthd}) {
      c->forward();
      c->backward();
    }
    const double worst = worst_difference(chain, fused, n), worst_bthd = worst_difference(transposed, bthd, n);
    if (!(worst < 1e-4) || !(worst_bthd < 1e-6)) {
      std::cerr << fmt::format("attention_bench: gradients differ by {:.3g} (fused) and {:.3g} (bthd) at {},{},{},{}\n",
                               worst, worst_bthd, s.b, s.h, s.t, s.d);
      return 1;
    }
    // One form's reps run back to back: its forward alone, then its forward and backward.
    double fwd[4], all[4];
    int f = 0;
    for (Compiled* c : {&chain, &fused, &transposed, &bthd}) {
      fwd[f] = seconds([&] { c->forward(); }, reps);
      all[f++] = seconds([&] { c->forward(); c->backward(); }, reps);
    }
    fmt::print("| {},{},{},{} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.2f}x | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.2f}x | "
               "{:.1e} | {:.1e} |\n",
               s.b, s.h, s.t, s.d, fwd[0] * 1e3, fwd[1] * 1e3, fwd[2] * 1e3, fwd[3] * 1e3, fwd[2] / fwd[3],
               all[0] * 1e3, all[1] * 1e3, all[2] * 1e3, all[3] * 1e3, all[2] / all[3], worst, worst_bthd);
  }
  fmt::print("\n{} thread(s), f32 products by {}\n", threads, pf::cpu::sgemm_kernel_name());
  return 0;
}
