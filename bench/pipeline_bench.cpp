// Pipelined training on this machine's cores against the ideal pipeline:
// p stages of one core each, 1F1B, m micro-batches. Prints one table:
// throughput against p * (one-core throughput) * m / (m + p - 1), the measured
// bubble against the schedule's theory, and the runtime's overhead per action.
//
//   scripts/build.sh --target pipeline_bench && build/bench/pipeline_bench [steps]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "runtime/trainer.h"

namespace pf {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Workload {
  std::string name;
  std::string file;
  DimBinding overrides;
};

struct Inputs {
  std::vector<std::vector<std::byte>> data;
  std::vector<std::pair<std::string, const void*>> named;
  std::vector<const void*> pointers;
};

Inputs make_inputs(const Function& g) {
  Inputs in;
  std::mt19937 rng(3);
  for (ValueId a : g.args) {
    const TensorType& t = g.type_of(a);
    std::vector<std::byte> bytes(static_cast<size_t>(t.bytes()));
    if (t.dtype == DType::f32) {
      auto* p = reinterpret_cast<float*>(bytes.data());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
    } else {
      auto* p = reinterpret_cast<int32_t*>(bytes.data());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<int32_t>(rng() % 10);
    }
    in.data.push_back(std::move(bytes));
  }
  for (size_t i = 0; i < g.args.size(); ++i) {
    in.named.emplace_back(g.values[g.args[i]].name, in.data[i].data());
    in.pointers.push_back(in.data[i].data());
  }
  return in;
}

Module load(const Workload& w) { return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/" + w.file)); }

// Samples per second of the whole model on one core.
double one_core(const Workload& w, int steps) {
  Module m = load(w);
  DimBinding b = m.binding(w.overrides);
  TrainerOptions o;
  Trainer trainer(std::move(m), b, o);
  trainer.params().initialize(1);
  trainer.start();
  Inputs in = make_inputs(trainer.graph());
  std::vector<double> times;
  for (int i = 0; i < steps + 1; ++i) {
    auto t0 = Clock::now();
    StepResult r = trainer.compute_gradients(in.pointers);
    trainer.apply(r);
    if (i > 0) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return static_cast<double>(b.at("B")) / median(times);
}

struct PipelineRun {
  double samples_per_s, bubble, theory, overhead_us;
  std::string split;
};

PipelineRun pipelined(const Workload& w, int p, int m, int steps) {
  Module model = load(w);
  DimBinding b = model.binding(w.overrides);
  verify_module(model, b, VerifyOptions{true});
  CompileOptions co;
  co.devices = fmt::format("cpu:{}", p);
  co.microbatches = m;
  CompileResult compiled = compile_plan(std::move(model), b, w.file, co);
  PipelineOptions po;
  auto pipeline = Pipeline::from_plan(compiled.plan, po);
  pipeline->initialize(1);
  pipeline->start();
  Module full = load(w);
  verify_module(full, b);
  Inputs in = make_inputs(full.graph());
  std::vector<double> times, bubbles, overheads;
  for (int i = 0; i < steps + 1; ++i) {
    PipelineStepResult r = pipeline->train_step(in.named);
    if (i == 0) continue;
    times.push_back(r.seconds);
    bubbles.push_back(r.bubble);
    // What a device spends outside its computations, per action it walks:
    // the hand-offs, the waits that are not bubbles, the bookkeeping.
    double busy = 0;
    for (const TraceEvent& e : r.trace) busy += e.end_s - e.start_s;
    int actions = 0;
    for (const auto& list : pipeline->schedule().per_device) actions += static_cast<int>(list.size());
    double idle_theory = compiled.plan.predicted.bubble_fraction * p * r.seconds;
    overheads.push_back(std::max(0.0, p * r.seconds - busy - idle_theory) / actions * 1e6);
  }
  PipelineRun run;
  run.samples_per_s = static_cast<double>(b.at("B")) / median(times);
  run.bubble = median(bubbles);
  run.theory = static_cast<double>(p - 1) / (m + p - 1);
  run.overhead_us = median(overheads);
  for (const PlanStage& s : compiled.plan.stages)
    run.split += fmt::format("{}{}", run.split.empty() ? "" : " | ", s.layers.front() + ".." + s.layers.back());
  return run;
}

}  // namespace
}  // namespace pf

int main(int argc, char** argv) {
  using namespace pf;
  int steps = argc > 1 ? std::stoi(argv[1]) : 5;
  cpu::set_blas_threads(1);
  std::vector<Workload> workloads = {
      {"gpt L=4 C=512 T=128 V=8192 B=8", "examples/gpt.pf",
       {{"B", 8}, {"L", 4}, {"C", 512}, {"H", 8}, {"T", 128}, {"S", 128}, {"V", 8192}}},
      {"mlp 784-4096x3-10 B=256", "examples/mlp.pf", {{"B", 256}}},
  };
  fmt::print("| model | p | m | one core (samples/s) | pipelined (samples/s) | ideal (samples/s) | of ideal | "
             "bubble measured | bubble theory | overhead per action | split |\n");
  fmt::print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const Workload& w : workloads) {
    double base = one_core(w, steps);
    for (int m : {8}) {
      int p = 2;
      PipelineRun r = pipelined(w, p, m, steps);
      double ideal = p * base * m / (m + p - 1);
      fmt::print("| {} | {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.1f}% | {:.1f}% | {:.1f}% | {:.0f} us | {} |\n", w.name,
                 p, m, base, r.samples_per_s, ideal, 100 * r.samples_per_s / ideal, 100 * r.bubble, 100 * r.theory,
                 r.overhead_us, r.split);
    }
  }
  return 0;
}
