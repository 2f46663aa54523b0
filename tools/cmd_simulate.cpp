// `pipeforge simulate`: a plan's training step predicted on a cost model.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "ir/units.h"
#include "plan/plan.h"
#include "runtime/schedule_jitter.h"
#include "simulator/measured_run.h"
#include "simulator/simulator.h"
#include "tools/plan_facts.h"
#include "tools/command.h"
#include "tools/option_checks.h"

namespace pf::tools {

namespace {
struct SimulateCommandOptions {
  std::string plan, profile, cluster, trace, precision, optimizer = "adamw", against;
  double jitter = 0;
  int trials = Jitter{}.trials;
};

std::string ms(double seconds) { return fmt::format("{:.3f}", seconds * 1e3); }
std::string bytes(int64_t n) { return format_bytes(static_cast<double>(n)); }

std::string render(const Plan& plan, const PlanSimulation& sim, const DeviceProfile& profile,
                   const std::string& optimizer) {
  std::string out = fmt::format(
      "simulated @{}: {} on {}{}, {}, {}, profile {}{}, {}\n", plan.model_name,
      tools::count(plan.stages.size(), "stage", "stages"), tools::count(sim.devices.size(), "device", "devices"),
      sim.replicas > 1 ? fmt::format(" x {} replicas", sim.replicas) : std::string(), plan.schedule,
      tools::count(static_cast<size_t>(plan.microbatches), "micro-batch", "micro-batches"),
      profile.path.empty() ? profile.name : profile.path, profile.cold_caches ? " (caches cold)" : "", optimizer);
  out += fmt::format("{:>5}  {:<8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>10}  {:>10}\n", "stage", "device", "fwd ms",
                     "bwd ms", "busy ms", "idle ms", "peak mem", "mem limit");
  for (size_t s = 0; s < sim.stages.size(); ++s) {
    const SimulatedStage& st = sim.stages[s];
    const double idle = sim.walk_s - sim.devices[static_cast<size_t>(st.device)].busy_s;
    out += fmt::format("{:>5}  {:<8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>10}  {:>10}\n", s,
                       plan.devices[static_cast<size_t>(st.device)].name, ms(st.forward_s), ms(st.backward_s),
                       ms(st.busy_s), ms(idle), bytes(st.peak_memory_bytes), bytes(st.memory_limit_bytes));
  }
  if (sim.replicas > 1) {
    double longest = 0;
    for (const SimulatedStage& st : sim.stages) longest = std::max(longest, st.all_reduce_s);
    out += fmt::format("all-reduce over {} replicas: {} ms for the largest stage{}\n", sim.replicas, ms(longest),
                       plan.shard_optimizer
                           ? fmt::format("; each replica holds and updates 1/{} of the optimizer state{}, then gathers "
                                         "the updated weights",
                                         sim.replicas,
                                         plan.expert_parallel > 1 ? fmt::format(" (of its experts' 1/{})",
                                                                                 sim.replicas / plan.expert_parallel)
                                                                   : "")
                           : "");
  }
  out.append(fmt::format("step {} ms (schedule {} ms)  bubble {:.1f}%", ms(sim.step_s), ms(sim.walk_s),
                         100 * sim.bubble));
  if (sim.theory_bubble) out.append(fmt::format(" (theory {:.1f}%)", 100 * *sim.theory_bubble));
  out.append(fmt::format("  {:.1f} samples/s  MFU {:.1f}% ({:.3g} TFLOP per step)\n", sim.samples_per_s(),
                         100 * sim.mfu(), sim.flops / 1e12));
  return out;
}

/// The prediction beside a traced run of the plan: each stage's actions,
/// the optimizers, the walk, the step and the bubble; then the plan's lists
/// on the run's own action times, steady and under the jitter its actions
/// showed, which part the prices from the noise in what the run lost.
std::string render_against(const PlanSimulation& sim, const MeasuredRun& run, const std::string& path,
                           int trials) {
  const int stages = static_cast<int>(sim.costs.stages.size());
  for (const auto& [key, seconds] : run.action_s) {
    const auto [stage, kind] = key;
    if (stage < 0 || stage >= stages)
      throw Error(fmt::format("{} runs stage {}, and the plan has {}: trace a run of this plan", path, stage,
                              tools::count(static_cast<size_t>(stages), "stage", "stages")));
    const bool split = kind == ActionKind::backward_input || kind == ActionKind::backward_weight;
    if (kind == ActionKind::backward && sim.schedule.split_backward)
      throw Error(fmt::format("{} runs stage {}'s backward whole, and the plan splits it into B and W: trace a run "
                              "of this plan",
                              path, stage));
    if (split && !sim.schedule.split_backward)
      throw Error(fmt::format("{} splits stage {}'s backward into B and W, and the plan runs it whole: trace a run "
                              "of this plan",
                              path, stage));
  }
  auto error = [](double predicted, double measured) {
    return measured > 0 ? fmt::format("{:+.1f}%", 100 * (predicted - measured) / measured) : std::string("-");
  };
  std::string out = fmt::format("against {}: {} of {}, the median of {}\n", path,
                                tools::count(static_cast<size_t>(run.steps), "step", "steps"),
                                tools::count(static_cast<size_t>(run.devices), "device", "devices"),
                                run.measured == run.steps ? std::string("the one step")
                                                          : fmt::format("steps 2 to {}", run.steps));
  out += fmt::format("{:>5}  {:<16}  {:>12}  {:>11}  {:>7}\n", "stage", "action", "predicted ms", "measured ms",
                     "error");
  for (const auto& [key, measured] : run.action_s) {
    const auto [stage, kind] = key;
    const double predicted = sim.costs.stages[static_cast<size_t>(stage)].compute(kind);
    out += fmt::format("{:>5}  {:<16}  {:>12}  {:>11}  {:>7}\n", stage, action_kind_name(kind), ms(predicted),
                       ms(measured), error(predicted, measured));
  }
  for (const auto& [device, measured] : run.optimizer_s) {
    if (device >= static_cast<int>(sim.devices.size())) continue;  // a replica's track: replica 0's is the prediction
    const double predicted = sim.devices[static_cast<size_t>(device)].optimizer_s;
    out += fmt::format("{:>5}  {:<16}  {:>12}  {:>11}  {:>7}\n", "", fmt::format("optimizer, dev {}", device),
                       ms(predicted), ms(measured), error(predicted, measured));
  }
  out += fmt::format("{:>5}  {:<16}  {:>12}  {:>11}  {:>7}\n", "", "schedule", ms(sim.walk_s), ms(run.walk_s),
                     error(sim.walk_s, run.walk_s));
  out += fmt::format("{:>5}  {:<16}  {:>12}  {:>11}  {:>7}\n", "", "step", ms(sim.step_s), ms(run.step_s),
                     error(sim.step_s, run.step_s));
  out += fmt::format("{:>5}  {:<16}  {:>11.1f}%  {:>10.1f}%\n", "", "bubble", 100 * sim.bubble, 100 * run.bubble);
  // The same lists on the run's own action times: how far the prices alone
  // put the prediction off, then what the run's noise adds on top.
  ActionCosts own = sim.costs;
  for (const auto& [key, seconds] : run.action_s)
    own.stages[static_cast<size_t>(key.first)].compute(key.second) = seconds;
  const Simulation steady = simulate(sim.schedule, own);
  out += fmt::format("the plan's lists on the run's own action times (their medians): schedule {} ms, bubble "
                     "{:.1f}%\n",
                     ms(steady.makespan), 100 * steady.bubble_fraction);
  if (run.log_spread > 1) {
    out += fmt::format("the run's actions spread by {:.3f} (log) around their medians: more than the jitter model "
                       "takes (1); actions this short are mostly dispatch\n",
                       run.log_spread);
  } else if (run.log_spread > 0) {
    const JitteredSimulation j = simulate_jittered(sim.schedule, own, Jitter{run.log_spread, trials});
    out += fmt::format("the run's actions spread by {:.3f} (log) around their medians; on those times under that "
                       "jitter, {} trials: schedule {} ms mean ({:+.1f}%), bubble {:.1f}%\n",
                       run.log_spread, trials, ms(j.mean_makespan), 100 * j.slowdown(), 100 * j.mean_bubble);
  }
  return out;
}
}  // namespace

void add_simulate_command(CLI::App& app) {
  auto o = std::make_shared<SimulateCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "simulate", "predict a plan's training step on a cost model: per-stage times, bubble, memory, MFU, a trace");
  cmd->add_option("plan", o->plan, "the plan (.json)")->required();
  cmd->add_option("--profile", o->profile,
                  "a device profile (JSON, e.g. from 'pipeforge profile'); default: the built-in roofline of the "
                  "plan's first device");
  cmd->add_option("--precision", o->precision,
                  "the built-in roofline's matmul precision (fp32, tf32, bf16); default: the plan's dtype");
  cmd->add_option("--cluster", o->cluster, "links inside and between nodes (JSON); default: the device kind's");
  cmd->add_option("--optimizer", o->optimizer, "adamw or sgd: its state and its pass over the parameters")
      ->check(CLI::IsMember({"adamw", "sgd"}));
  cmd->add_option("--trace", o->trace, "write the predicted timeline as a Perfetto trace (JSON), as run --trace does");
  fraction(cmd->add_option("--jitter", o->jitter,
                           "also run the schedule with each action's time drawn around its price (a lognormal "
                           "factor of mean 1 and this spread of its log, e.g. 0.05) and print its mean, median and "
                           "90th percentile over --trials runs"));
  at_least(cmd->add_option("--trials", o->trials, "runs of the schedule under --jitter (and --against)")
               ->capture_default_str(),
           1);
  cmd->add_option("--against", o->against,
                  "a trace of a real run of the plan (pipeforge run PLAN --trace FILE): set each stage's actions, "
                  "the step and the bubble it measured (medians over its steps after the first) beside the "
                  "prediction, and run the plan's lists again under the jitter its actions showed");
  cmd->callback([cmd, o] {
    if (!o->profile.empty() && cmd->count("--precision") > 0)
      throw Error(fmt::format("--precision: the profile {} names its own precision; drop the flag", o->profile));
    std::vector<Module> programs;
    const Plan plan = load_plan(o->plan, &programs);
    const std::string& first = plan.devices.front().name;
    const std::string precision =
        !o->precision.empty() ? o->precision : (plan.dtype == DType::bf16 ? "bf16" : "fp32");
    const DeviceProfile profile =
        o->profile.empty() ? builtin_profile(first.substr(0, first.find(':')), precision) : load_profile(o->profile);
    if (!o->profile.empty()) check_profile_dtype(profile, o->profile, dtype_name(plan.dtype), "compile the plan");
    const Cluster cluster = o->cluster.empty() ? default_cluster(profile.kind) : load_cluster(o->cluster);
    const PlanSimulation sim = simulate_plan(plan, programs, profile, cluster, SimulateOptions{o->optimizer});
    std::cout << render(plan, sim, profile, o->optimizer);
    if (o->jitter > 0) {
      const JitteredSimulation j = simulate_jittered(sim.schedule, sim.costs, Jitter{o->jitter, o->trials});
      std::cout << fmt::format("jitter {:g}, {} trials: schedule {} ms mean ({:+.1f}%), {} ms median, {} ms p90; "
                               "bubble {:.1f}%\n",
                               o->jitter, o->trials, ms(j.mean_makespan), 100 * j.slowdown(),
                               ms(j.median_makespan), ms(j.p90_makespan), 100 * j.mean_bubble);
    }
    if (!o->against.empty())
      std::cout << render_against(sim, measure_trace(read_source_file(o->against)->text(), o->against), o->against,
                                  o->trials);
    if (!o->trace.empty()) {
      write_output(o->trace, trace_json(simulation_trace(sim), static_cast<int>(sim.devices.size())));
      std::cout << fmt::format("wrote {}\n", o->trace);
    }
  });
}

}  // namespace pf::tools
