// The simulator against real runs on this machine: for each workload of
// pipeline_bench (p = 2 stages of one core, m = 8, 1F1B, ZB-H1, ZB-V,
// DualPipeV and zbi with 2 chunks), a CPU profile of the model measured at
// the micro-batch (as `pipeforge profile` does), the plan compiled as
// pipeline_bench compiles it, its step simulated on that profile and on the
// built-in roofline, and the real pipeline's step
// (median of a few rounds). Prints one table: predicted against measured
// step time and peak memory per stage (the stash a run measures plus the
// parameters' weights, gradients and SGD momentum).
//
// With "cold" after the cuts, the profiles are timed with cold caches
// (`pipeforge profile --cold-caches`).
//
//   scripts/build.sh --target simulate_bench && build/bench/simulate_bench [rounds [name filter [cuts [cold]]]]
#include <fmt/format.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "bench/median.h"
#include "bench/pipeline_workloads.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "passes/pipeline.h"
#include "profiler/profiler.h"
#include "runtime/pipeline.h"
#include "runtime/random_batch.h"
#include "simulator/simulator.h"

namespace pf {
namespace {

using Clock = std::chrono::steady_clock;

using bench::load_workload;
using bench::Workload;

double error(double predicted, double measured) { return std::abs(predicted - measured) / measured; }

}  // namespace
}  // namespace pf

int main(int argc, char** argv) {
  using namespace pf;
  const int rounds = argc > 1 ? std::stoi(argv[1]) : 5;
  const std::string only = argc > 2 ? argv[2] : "";
  const std::string cuts = argc > 3 ? argv[3] : "auto";  // compile's --cuts
  const bool cold_caches = argc > 4 && std::string(argv[4]) == "cold";
  cpu::set_cpu_threads(1);  // a CPU device is one core
  const std::vector<Workload> workloads = bench::pipeline_workloads();

  const int p = 2, m = 8;
  fmt::print("| model | schedule | step predicted (ms) | step measured (ms) | error | step on the roofline (ms) | "
             "peak memory predicted (MiB, per stage) | measured | worst error |\n");
  fmt::print("|---|---|---:|---:|---:|---:|---|---|---:|\n");
  for (const Workload& w : workloads) {
    if (w.name.find(only) == std::string::npos) continue;
    // The profile: every op of the model timed at one micro-batch, both
    // cores busy (as the two stages will keep them).
    Module model = load_workload(w);
    const DimBinding b = model.binding(w.overrides);
    verify_module(model, b, VerifyOptions{true});
    const std::string profile_path = fmt::format("/tmp/pf_simulate_bench_{}.json", ::getpid());
    const DeviceProfile measured = bench::measure_workload(w, m, p, profile_path, cold_caches);
    for (const std::string schedule : {"1f1b", "zb1", "zbv", "dualpipev", "zbi"}) {
      CompileOptions co;
      co.devices = fmt::format("cpu:{}", p);
      co.microbatches = m;
      co.schedule = schedule;
      co.cuts = cuts;
      Plan plan = compile_plan(model, b, w.file, co).plan;
      std::vector<Module> programs;
      check_plan(plan, w.name, &programs);
      const Cluster cluster = default_cluster("cpu");
      const SimulateOptions so{"sgd"};
      const PlanSimulation sim = simulate_plan(plan, programs, measured, cluster, so);
      const PlanSimulation roofline = simulate_plan(plan, programs, builtin_profile("cpu"), cluster, so);

      // The real step, as pipeline_bench runs it: SGD with momentum.
      PipelineOptions po;
      po.train.optimizer = "sgd";
      po.train.lr = 0.01;
      std::unique_ptr<Pipeline> pipeline = Pipeline::from_plan(plan, programs, po);
      pipeline->initialize(1);
      pipeline->start();
      Module full = load_workload(w);
      verify_module(full, b);
      const RandomBatch inputs = random_batch(full.graph(), 3, 10);
      pipeline->train_step(inputs.named);  // warm-up
      std::vector<double> seconds;
      PipelineStepResult last;
      for (int r = 0; r < rounds; ++r) {
        const auto t0 = Clock::now();
        last = pipeline->train_step(inputs.named);
        seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      const double step = bench::median(seconds);
      std::string predicted_mem, measured_mem;
      double worst = 0;
      for (size_t s = 0; s < plan.stages.size(); ++s) {
        // Weights, gradients and the momentum buffer, and the stash it held.
        const int64_t mine = sim.stages[s].peak_memory_bytes;
        const int64_t real = 3 * sim.stages[s].price.param_bytes + last.peak_stash_bytes[s];
        predicted_mem += fmt::format("{}{:.1f}", s ? " / " : "", mine / 1048576.0);
        measured_mem += fmt::format("{}{:.1f}", s ? " / " : "", real / 1048576.0);
        worst = std::max(worst, error(static_cast<double>(mine), static_cast<double>(real)));
      }
      fmt::print("| {} | {} | {:.1f} | {:.1f} | {:.1f}% | {:.1f} | {} | {} | {:.1f}% |\n", w.name, schedule,
                 sim.step_s * 1e3, step * 1e3, 100 * error(sim.step_s, step), roofline.step_s * 1e3, predicted_mem,
                 measured_mem, 100 * worst);
    }
  }
  return 0;
}
