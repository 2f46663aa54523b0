// The optimizer state shared out between data-parallel replicas against each
// replica holding all of it: the same plan compiled both ways (AdamW), the
// state and the whole memory one rank holds, and a training step's time,
// measured in alternating rounds (median per-round ratio). Every rank is one
// core (1 thread); layouts with more ranks than cores share them.
//
//   make -C build shard_bench && build/bench/shard_bench [rounds [name filter]]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "bench/median.h"
#include "bench/pipeline_workloads.h"
#include "runtime/pipeline.h"
#include "runtime/random_batch.h"

namespace pf {
namespace {

using Clock = std::chrono::steady_clock;

struct Replicated {
  int stages, replicas;
};

struct Ranks {
  std::unique_ptr<Pipeline> pipeline;
  int64_t state = 0, total = 0;  // the busiest rank's optimizer state and whole memory
};

Ranks start(const bench::Workload& w, const Replicated& layout, bool shard) {
  Module model = bench::load_workload(w);
  const DimBinding b = model.binding(w.overrides);
  CompileOptions co;
  co.devices = fmt::format("cpu:{}", layout.stages);
  co.data_parallel = layout.replicas;
  co.microbatches = 4;
  co.shard_optimizer = shard;
  const Plan plan = compile_plan(std::move(model), b, w.file, co).plan;
  PipelineOptions po;
  po.train.optimizer = "adamw";
  po.cpu_threads = 1;
  Ranks out;
  out.pipeline = Pipeline::from_plan(plan, po);
  out.pipeline->initialize(1);
  out.pipeline->start();
  std::vector<int64_t> state(plan.ranks.size(), 0), total(plan.ranks.size(), 0);
  for (const StageMemory& m : out.pipeline->memory()) {
    state[static_cast<size_t>(m.rank)] += m.optimizer_state;
    total[static_cast<size_t>(m.rank)] += m.total();
  }
  out.state = *std::max_element(state.begin(), state.end());
  out.total = *std::max_element(total.begin(), total.end());
  return out;
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / 1048576.0; }

}  // namespace
}  // namespace pf

int main(int argc, char** argv) {
  using namespace pf;
  const int rounds = argc > 1 ? std::stoi(argv[1]) : 5;
  const std::string only = argc > 2 ? argv[2] : "";
  cpu::set_cpu_threads(1);
  fmt::print("| model | stages x replicas | optimizer state per rank, replicated / sharded (MiB) | rank memory, "
             "replicated / sharded (MiB) | step replicated (ms) | step sharded (ms) | sharded / replicated |\n");
  fmt::print("|---|---|---|---|---:|---:|---:|\n");
  for (const bench::Workload& w : bench::pipeline_workloads()) {
    if (w.name.find(only) == std::string::npos) continue;
    Module full = bench::load_workload(w);
    const DimBinding b = full.binding(w.overrides);
    verify_module(full, b);
    const RandomBatch batch = random_batch(full.graph(), 3, 10);
    for (const Replicated layout : {Replicated{1, 2}, Replicated{2, 2}}) {
      Ranks whole = start(w, layout, false), shared = start(w, layout, true);
      std::vector<double> times[2], ratios;
      for (Ranks* r : {&whole, &shared}) r->pipeline->train_step(batch.named);  // warm-up
      for (int round = 0; round < rounds; ++round) {
        double t[2];
        for (int k = 0; k < 2; ++k) {
          const auto t0 = Clock::now();
          (k == 0 ? whole : shared).pipeline->train_step(batch.named);
          t[k] = std::chrono::duration<double>(Clock::now() - t0).count();
          times[k].push_back(t[k]);
        }
        ratios.push_back(t[1] / t[0]);
      }
      fmt::print("| {} | {} x {} | {:.1f} / {:.1f} | {:.1f} / {:.1f} | {:.1f} | {:.1f} | {:.3f} |\n", w.name,
                 layout.stages, layout.replicas, mib(whole.state), mib(shared.state), mib(whole.total),
                 mib(shared.total), 1e3 * bench::median(times[0]), 1e3 * bench::median(times[1]),
                 bench::median(ratios));
    }
  }
  return 0;
}
