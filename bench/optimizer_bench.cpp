// The optimizer's step on one core, as a training step ends: the gradient norm, then AdamW's or SGD's update over
// one stage's parameters, against a stream over the same bytes (read three arrays, write one: the rate a
// memory-bound pass can reach here). Prints one table: median ms, ns per parameter, and bytes moved per second
// (AdamW reads w, g, m, v and writes w, m, v; SGD with momentum reads w, g, buf and writes w, buf; the norm
// reads g).
//
//   cmake --build build --target optimizer_bench && build/bench/optimizer_bench [parameters [reps]]
//
// The default, 18.4 M parameters, is one stage of the 784-4096x3 MLP cut in two.
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "bench/median.h"
#include "runtime/optimizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double median_ms(int reps, const std::function<void()>& run) {
  run();  // warm-up: the optimizer's state, the pages
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return pf::bench::median(ms);
}

// a[i] = b[i] + s * c[i] + a[i]: three arrays read, one written, no arithmetic to wait on.
__attribute__((noinline)) void stream(float* __restrict a, const float* __restrict b, const float* __restrict c,
                                      int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i] + a[i];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::stoll(argv[1]) : 18'400'000;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 9;
  pf::cpu::set_cpu_threads(1);
  std::vector<float> w(static_cast<size_t>(n), 0.5f), g(static_cast<size_t>(n), 1e-3f), x(static_cast<size_t>(n), 1.f);
  const std::vector<pf::Param> params = {pf::Param{"w", {n}, w.data(), g.data(), true}};
  pf::AdamW adamw(params, {});
  pf::Sgd sgd(params, {.momentum = 0.9});

  struct Row {
    std::string what;
    double bytes_per_param;
    std::function<void()> run;
  };
  const std::vector<Row> rows = {
      {"stream: a = b + s c + a (the bandwidth a pass reaches)", 16, [&] { stream(x.data(), w.data(), g.data(), n, 0.f); }},
      {"gradient norm", 4, [&] { pf::grad_sq_norm(params); }},
      {"AdamW update", 28, [&] { adamw.step(1e-4); }},
      {"SGD update, momentum 0.9", 20, [&] { sgd.step(1e-4); }},
      {"norm + AdamW (a step's end)", 32, [&] {
         pf::grad_sq_norm(params);
         adamw.step(1e-4);
       }},
  };
  fmt::print("{:.1f} M parameters, one thread, median of {}\n\n", static_cast<double>(n) / 1e6, reps);
  fmt::print("| pass | ms | ns per parameter | GB/s moved |\n|---|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const double ms = median_ms(reps, r.run);
    fmt::print("| {} | {:.1f} | {:.2f} | {:.1f} |\n", r.what, ms, ms * 1e6 / static_cast<double>(n),
               r.bytes_per_param * static_cast<double>(n) / (ms * 1e-3) / 1e9);
  }
  return 0;
}
