// Pipelined training on this machine's cores against the ideal pipeline:
// p = 2 stages of one core each, 1F1B and ZB-H1 (each also with one more
// forward ahead on device 0, "+1": slack against jitter), ZB-V, DualPipeV
// and zbi (2 or 4 chunks per core, whichever the compiler predicts faster), m = 8
// micro-batches. Prints one table: throughput against p * (one-core
// throughput) * (1 - bubble), the schedule's bubble on unit costs
// (m / (m + p - 1) of busy time for 1F1B), the measured bubble against that
// theory, and the runtime's overhead per action.
// The one-core throughput is the model computed micro-batch by micro-batch
// as the stages compute it (a plan of one device); the whole batch in one
// pass is shown beside it. The plans are what `pipeforge compile` gives
// without a profile (the built-in roofline, cuts inside layers and inside
// products where they help); a profile path as third argument compiles them
// on it instead. A last row per model runs 1F1B on the plan cut between
// whole ops only (`--cuts any`), in the same rounds, to show what cutting
// inside a product gives on this machine's noise.
//
//   scripts/build.sh --target pipeline_bench && build/bench/pipeline_bench [rounds [name filter [profile]]]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "bench/pipeline_workloads.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "runtime/random_batch.h"

namespace pf {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

using bench::load_workload;
using bench::Workload;

using Inputs = RandomBatch;

Inputs make_inputs(const Function& g) { return random_batch(g, 3, 10); }

// One pipelined step, measured.
struct PipelinedStep {
  double seconds;      // wall time of train_step, the optimizer step included
  double bubble;       // as the runtime measures it
  double overhead_us;  // per action: time a device spends neither computing nor waiting for a receive
  std::vector<double> busy_s;  // per device: computing
};

class Pipelined {
 public:
  /// With p = 1, the one-core baselines: the whole batch in one pass (m =
  /// 1), or, the baseline of pipeline efficiency, micro-batch after
  /// micro-batch as the stages compute it (the same GEMM shapes, no
  /// pipeline), then one optimizer step.
  /// `chunk_choices`: the chunks per device to compile, the plan of the
  /// shortest predicted step kept (as a user comparing them would).
  /// `extra_warmup` (1f1b and zb1): that many more forwards ahead on every
  /// device but the last (compile --extra-warmup).
  Pipelined(const Workload& w, const std::string& schedule, int p, int m, const std::string& profile,
            const std::string& cuts = "auto", const std::vector<int>& chunk_choices = {1}, int extra_warmup = 0)
      : p_(p) {
    DimBinding b = load_workload(w).binding(w.overrides);
    std::optional<CompileResult> compiled;
    for (int v : chunk_choices) {
      Module model = load_workload(w);
      verify_module(model, b, VerifyOptions{true});
      CompileOptions co;
      co.devices = fmt::format("cpu:{}", p);
      co.microbatches = m;
      co.schedule = schedule;
      co.profile = profile;
      co.cuts = cuts;
      co.virtual_stages = v;
      co.extra_warmup = extra_warmup;
      CompileResult r = compile_plan(std::move(model), b, w.file, co);
      if (!compiled || r.plan.predicted.step_s < compiled->plan.predicted.step_s) compiled = std::move(r);
    }
    PipelineOptions po;
    po.trace = true;  // receives too: their waits are not overhead
    // SGD with momentum, as every run of this bench so far: its update is a
    // light pass over the weights, which AdamW's is not.
    po.train.optimizer = "sgd";
    po.train.lr = 0.01;
    pipeline_ = Pipeline::from_plan(compiled->plan, po);
    pipeline_->initialize(1);
    pipeline_->start();
    Module full = load_workload(w);
    verify_module(full, b);
    inputs_ = make_inputs(full.graph());
    for (const PlanStage& s : compiled->plan.stages)
      split_ += fmt::format("{}{}", split_.empty() ? "" : " | ", s.layers.front() + ".." + s.layers.back());
    // The theory is the kind's own order on unit costs (zbi's plan order is
    // chosen on the plan's costs, and would be judged unfairly on others).
    const Schedule& walked = pipeline_->schedule();
    chunks_ = walked.virtual_stages;
    theory_ = simulate(walked.kind == ScheduleKind::custom
                           ? walked
                           : make_schedule(walked.kind, walked.devices, walked.microbatches, walked.virtual_stages))
                  .bubble_fraction;
  }

  PipelinedStep step() {
    const auto t0 = Clock::now();
    PipelineStepResult r = pipeline_->train_step(inputs_.named);
    PipelinedStep out{std::chrono::duration<double>(Clock::now() - t0).count(), r.bubble, 0,
                      std::vector<double>(static_cast<size_t>(p_), 0.0)};
    // Per device: from its first action's start to its last one's end, the
    // time outside every compute and receive is the runtime's own.
    std::vector<double> first(static_cast<size_t>(p_), 1e30), last(static_cast<size_t>(p_), 0.0),
        accounted(static_cast<size_t>(p_), 0.0);
    for (const TraceEvent& e : r.trace) {
      if (e.action.kind == ActionKind::step) continue;  // the optimizer, after the walk and its collectives
      const auto d = static_cast<size_t>(e.device);
      first[d] = std::min(first[d], e.start_s);
      last[d] = std::max(last[d], e.end_s);
      accounted[d] += e.end_s - e.start_s;
      if (is_compute(e.action.kind)) out.busy_s[d] += e.end_s - e.start_s;
    }
    double unaccounted = 0;
    int actions = 0;
    for (size_t d = 0; d < static_cast<size_t>(p_); ++d) {
      unaccounted += std::max(0.0, last[d] - first[d] - accounted[d]);
      actions += static_cast<int>(pipeline_->schedule().per_device[d].size());
    }
    out.overhead_us = unaccounted / actions * 1e6;
    return out;
  }
  const std::string& split() const { return split_; }
  double theory() const { return theory_; }
  int chunks() const { return chunks_; }

 private:
  int p_;
  std::unique_ptr<Pipeline> pipeline_;
  Inputs inputs_;
  std::string split_;
  double theory_ = 0;
  int chunks_ = 1;
};

}  // namespace
}  // namespace pf

int main(int argc, char** argv) {
  using namespace pf;
  // Rounds: each times one step of every configuration of a model back to
  // back, so that ratios compare runs seconds apart (this machine's speed
  // drifts by tens of percent over minutes); the table gives medians.
  const int rounds = argc > 1 ? std::stoi(argv[1]) : 5;
  const std::string only = argc > 2 ? argv[2] : "";  // run the workloads whose name contains this
  const std::string profile = argc > 3 ? argv[3] : "";  // compile on this profile instead of the roofline
  cpu::set_cpu_threads(1);
  const std::vector<Workload> workloads = bench::pipeline_workloads();

  fmt::print("| model | schedule | p | m | one core, whole batch (samples/s) | one core, m micro-batches (samples/s) | "
             "pipelined (samples/s) | ideal (samples/s) | of ideal | bubble measured | bubble theory | "
             "overhead per action | busy per device (ms) | split |\n");
  fmt::print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  const int p = 2, m = 8;
  struct Config {
    std::string schedule, cuts;
    std::vector<int> chunks;  // per device, the shortest predicted of these
    int extra_warmup = 0;
  };
  const std::vector<Config> configs = {{"1f1b", "auto", {1}},
                                       {"1f1b", "auto", {1}, 1},
                                       {"zb1", "auto", {1}},
                                       {"zb1", "auto", {1}, 1},
                                       {"zbv", "auto", {2}},
                                       {"dualpipev", "auto", {2}},
                                       {"zbi", "auto", {2, 4}},
                                       {"1f1b", "any", {1}}};
  for (const Workload& w : workloads) {
    if (w.name.find(only) == std::string::npos) continue;
    Pipelined whole(w, "1f1b", 1, 1, profile), micro(w, "1f1b", 1, m, profile);
    std::vector<std::unique_ptr<Pipelined>> pipelines;
    for (const Config& c : configs)
      pipelines.push_back(
          std::make_unique<Pipelined>(w, c.schedule, p, m, profile, c.cuts, c.chunks, c.extra_warmup));
    // A warm-up step each, then the rounds.
    whole.step();
    micro.step();
    for (auto& pl : pipelines) pl->step();
    std::vector<double> whole_s, micro_s;  // step seconds
    std::vector<std::vector<PipelinedStep>> steps(pipelines.size());
    for (int r = 0; r < rounds; ++r) {
      whole_s.push_back(whole.step().seconds);
      micro_s.push_back(micro.step().seconds);
      for (size_t i = 0; i < pipelines.size(); ++i) steps[i].push_back(pipelines[i]->step());
    }
    const double batch = static_cast<double>(load_workload(w).binding(w.overrides).at("B"));
    for (size_t i = 0; i < pipelines.size(); ++i) {
      const Pipelined& pl = *pipelines[i];
      // The ideal: p devices at the one-core rate, idle for the schedule's
      // bubble on unit costs; its ratio is taken within each round.
      std::vector<double> of_ideal, seconds, bubble, overhead;
      for (int r = 0; r < rounds; ++r) {
        const PipelinedStep& st = steps[i][static_cast<size_t>(r)];
        of_ideal.push_back(micro_s[static_cast<size_t>(r)] / (p * (1 - pl.theory()) * st.seconds));
        seconds.push_back(st.seconds);
        bubble.push_back(st.bubble);
        overhead.push_back(st.overhead_us);
      }
      std::string busy;
      for (int d = 0; d < p; ++d) {
        std::vector<double> of_device;
        for (const PipelinedStep& st : steps[i]) of_device.push_back(st.busy_s[static_cast<size_t>(d)]);
        busy += fmt::format("{}{:.0f}", d ? " / " : "", median(of_device) * 1e3);
      }
      const double base = batch / median(micro_s);
      const Config& c = configs[i];
      std::string label = c.schedule;
      if (c.extra_warmup > 0) label += fmt::format(" +{}", c.extra_warmup);
      if (c.chunks.size() > 1) label += fmt::format(" v={}", pl.chunks());
      if (c.cuts != "auto") label += ", cuts " + c.cuts;
      fmt::print("| {} | {} | {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f}% | {:.1f}% | {:.1f}% | {:.0f} us | {} | "
                 "{} |\n",
                 w.name, label, p, m, batch / median(whole_s), base, batch / median(seconds),
                 p * base * (1 - pl.theory()), 100 * median(of_ideal), 100 * median(bubble), 100 * pl.theory(),
                 median(overhead), busy, pl.split());
    }
  }
  return 0;
}
