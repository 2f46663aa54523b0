// `pipeforge schedule`: draw a pipeline schedule and its bubble, on unit costs or a plan's own.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include "ir/diagnostic.h"
#include "partitioner/device_profile.h"
#include "plan/plan.h"
#include "runtime/plan_schedule.h"
#include "runtime/schedule_jitter.h"
#include "runtime/schedule_warmup.h"
#include "simulator/simulator.h"
#include "tools/command.h"
#include "tools/option_checks.h"

namespace pf::tools {

namespace {
struct ScheduleOptions {
  std::string plan;
  int stages = 4;
  int microbatches = 8;
  std::string kind = "1f1b";
  int virtual_stages = 1;
  std::string format = "text";
  std::string output;
  std::string profile;
  std::string file;
  std::vector<double> costs;
  bool compare = false;
  int extra_warmup = 0;
  double jitter = 0;
  int trials = Jitter{}.trials;
};

/// The lists of the flags' kind, devices, micro-batches and chunks, in the
/// order zbi chooses on `costs` (the same for every stage).
Schedule generated_schedule(const ScheduleOptions& o, const UnitCosts& costs) {
  const ScheduleKind kind = *parse_schedule_kind(o.kind);
  Schedule schedule = make_schedule(kind, o.stages, o.microbatches, chunks_per_device(kind, o.virtual_stages), costs);
  return o.extra_warmup > 0 ? with_extra_warmup(schedule, o.extra_warmup) : schedule;
}

/// "step 10.3 mean (+3.0%), 10.2 median, 11.0 p90; bubble 14.1%": the
/// schedule's step under the flags' jitter against its steady one, times
/// scaled by `scale` (1e3 for seconds shown as ms).
std::string jitter_summary(const JitteredSimulation& j, double scale) {
  return fmt::format("step {:.4g} mean ({:+.1f}%), {:.4g} median, {:.4g} p90; bubble {:.1f}%",
                     scale * j.mean_makespan, 100 * j.slowdown(),
                     scale * j.median_makespan, scale * j.p90_makespan, 100 * j.mean_bubble);
}

/// The most activations `device` holds at once, in chunk-micro-batches: a
/// forward adds one, its W or fused backward frees it (the list is the
/// device's running order).
int held_at_once(const Schedule& schedule, int device) {
  int held = 0, peak = 0;
  for (const Action& a : schedule.per_device[static_cast<size_t>(device)]) {
    if (a.kind == ActionKind::forward) peak = std::max(peak, ++held);
    if (a.kind == ActionKind::backward || a.kind == ActionKind::backward_weight) --held;
  }
  return peak;
}

/// Every generated schedule on the flags' devices, micro-batches and costs,
/// one line each: its chunks, bubble, textbook bubble and what each device
/// holds at once in stages' worth (a chunk of v is 1/v of the device's
/// model), or why it cannot run the shape. Chunked kinds take --virtual (2
/// where it asks for one).
std::string compare_schedules(const ScheduleOptions& o, const UnitCosts& costs) {
  std::string out = fmt::format(
      "every schedule on {} device{}, {} micro-batch{}; per chunk a forward {:g}, an input gradient {:g}, a weight "
      "gradient {:g} (a backward not split: {:g}), a hand-off {:g}\n",
      o.stages, o.stages == 1 ? "" : "s", o.microbatches, o.microbatches == 1 ? "" : "es", costs.forward,
      costs.backward_input, costs.backward_weight, costs.backward, costs.comm);
  if (o.jitter > 0)
    out += fmt::format("under jitter: each action's time drawn around its cost (log spread {:g}), {} trials; the "
                       "step's mean against its steady length, and the mean bubble\n",
                       o.jitter, o.trials);
  // A name column wide enough for "1f1b +K".
  const size_t width = std::max<size_t>(12, o.extra_warmup > 0 ? fmt::format("1f1b +{} ", o.extra_warmup).size() : 0);
  out += fmt::format("{:<{}} chunks  bubble  theory  {}held at once per device (stages' worth)\n", "schedule", width,
                     o.jitter > 0 ? "jittered step      bubble  " : "");
  auto row = [&](const std::string& name, const Schedule& schedule) {
    const Simulation sim = simulate(schedule, costs);
    const std::optional<double> theory = theoretical_bubble(schedule, costs);
    std::string jittered;
    if (o.jitter > 0) {
      const JitteredSimulation j = simulate_jittered(schedule, costs, Jitter{o.jitter, o.trials});
      jittered = fmt::format("{:>8.4g} ({:+5.1f}%)  {:>5.1f}%  ", j.mean_makespan, 100 * j.slowdown(),
                             100 * j.mean_bubble);
    }
    std::string held;
    for (int d = 0; d < schedule.devices; ++d) {
      const double stages = double(held_at_once(schedule, d)) / schedule.virtual_stages;
      held += fmt::format("{}{:.3g}", d == 0 ? "" : " ", stages);
    }
    out += fmt::format("{:<{}} {:>6}  {:>5.1f}%  {:>6}  {}{}\n", name, width, schedule.virtual_stages,
                       100 * sim.bubble_fraction, theory ? fmt::format("{:.1f}%", 100 * *theory) : "-", jittered,
                       held);
  };
  for (const std::string& name : schedule_kind_names()) {
    const ScheduleKind kind = *parse_schedule_kind(name);
    const int chunks = chunks_per_device(kind, takes_chunks(kind) ? std::max(2, o.virtual_stages) : 1);
    std::optional<Schedule> schedule;
    try {
      schedule = make_schedule(kind, o.stages, o.microbatches, chunks, costs);
    } catch (const Error& e) {
      std::string why = e.message();  // "dualpipev needs ...": the name is the line's first column already
      if (why.starts_with(name + " ")) why.erase(0, name.size() + 1);
      out += fmt::format("{:<{}} {}\n", name, width, why);
      continue;
    }
    row(name, *schedule);
    if (o.extra_warmup > 0 && (kind == ScheduleKind::one_f_one_b || kind == ScheduleKind::zb_h1))
      row(fmt::format("{} +{}", name, o.extra_warmup), with_extra_warmup(*schedule, o.extra_warmup));
  }
  return out;
}

/// `sim` with its times in milliseconds instead of seconds.
Simulation in_milliseconds(Simulation sim) {
  for (auto& row : sim.per_device)
    for (TimedAction& t : row) {
      t.start *= 1e3;
      t.end *= 1e3;
    }
  sim.makespan *= 1e3;
  return sim;
}

/// The plan's schedule on its own costs, in milliseconds: each stage as the
/// compiler priced it (what its predicted bubble was simulated on), or as
/// `profile` prices it with the simulator; unit costs for a plan without
/// predictions.
Simulation plan_simulation(const Plan& plan, const std::vector<Module>& programs, const std::string& profile,
                           const Schedule& schedule) {
  if (!profile.empty()) {
    const DeviceProfile p = load_profile(profile);
    return in_milliseconds(simulate_plan(plan, programs, p, default_cluster(p.kind)).timeline);
  }
  std::vector<StageTime> times;
  bool priced = false;
  for (const PlanStage& s : plan.stages) {
    times.push_back({s.predicted.forward_s, s.predicted.backward_s, s.predicted.comm_s});
    priced = priced || s.predicted.forward_s > 0;
  }
  return priced ? in_milliseconds(simulate(schedule, stage_action_costs(times))) : simulate(schedule);
}

/// `plan` made to walk `written` (which must fit its stages) in place of its own lists.
void run_written_lists(Plan& plan, const std::string& plan_path, const Schedule& written, const std::string& path) {
  const Schedule own = plan_schedule(plan);
  auto shape = [](const Schedule& s) {
    return fmt::format("{} devices, {} micro-batches, {} chunk{} per device{} and {} backward", s.devices,
                       s.microbatches, s.virtual_stages, s.virtual_stages == 1 ? "" : "s",
                       s.placement.is_v_shape() ? " in a V"
                       : s.placement.is_listed() ? " placed " + s.placement.name()
                                                 : "",
                       s.split_backward ? "a split" : "a fused");
  };
  if (shape(own) != shape(written))
    throw Error(fmt::format("{} runs {}, and {} runs {}: compile the model with --schedule-file {} to plan for it",
                            path, shape(written), plan_path, shape(own), path));
  plan.schedule = "custom";
  plan.schedule_actions = write_schedule_text(written);
}

}  // namespace

void add_schedule_command(CLI::App& app) {
  auto opts = std::make_shared<ScheduleOptions>();
  CLI::App* cmd = app.add_subcommand(
      "schedule",
      "draw a pipeline schedule (F/B/W per micro-batch) and its bubble on unit costs, or a plan's on its own costs");
  cmd->add_option("plan", opts->plan,
                  "a plan (.json): draw its action lists on the costs the compiler predicted for its stages, with "
                  "the ranks that run each device's list (the flags below then come from the plan)");
  at_least(cmd->add_option("--stages,-p", opts->stages, "pipeline devices"), 1);
  at_least(cmd->add_option("--microbatches,-m", opts->microbatches, "micro-batches per step"), 1);
  cmd->add_option("--schedule,-s", opts->kind, schedule_kind_choices())->check(CLI::IsMember(schedule_kind_names()));
  at_least(cmd->add_option("--virtual,-v", opts->virtual_stages,
                           "model chunks per device (interleaved, loopedbfs; zbi: 2 or more; zbv and dualpipev "
                           "have 2)"),
           1);
  cmd->add_option("--format", opts->format,
                  "text (a grid of the actions in time), svg, list (each device's compute actions in order: a "
                  "schedule file to edit and give to compile --schedule-file), or csv (the same lists as PyTorch's "
                  "compute-only schedule CSV, which torch.distributed.pipelining schedules load with _load_csv)")
      ->check(CLI::IsMember({"text", "svg", "list", "csv"}));
  cmd->add_option("--file,-f", opts->file,
                  "a schedule file (or PyTorch's schedule CSV, a name ending in .csv): draw its action lists on unit "
                  "costs, or, with a plan, on the plan's costs in place of its own lists (the file must fit the "
                  "plan: its devices, micro-batches, chunks, placement and backward)");
  cmd->add_option("-o,--output", opts->output, "write the drawing here instead of standard output");
  cmd->add_option(
      "--profile", opts->profile,
      "with a plan: price its stages on this device profile (pipeforge profile) as pipeforge simulate does");
  cmd->add_option("--costs", opts->costs,
                  "without a plan: the unit costs F,B,W[,C] of a forward, an input gradient (a backward not split "
                  "takes B + W), a weight gradient and a hand-off's latency (default 1,1,1,0)")
      ->delimiter(',')
      ->expected(3, 4);
  at_least(cmd->add_option("--extra-warmup", opts->extra_warmup,
                           "1f1b or zb1: this many more forwards before the first backward on every device but the "
                           "last, each later forward as much earlier (as many more activations held), slack that "
                           "absorbs an action running late; --format list writes the lists for compile "
                           "--schedule-file"),
           0);
  fraction(cmd->add_option("--jitter", opts->jitter,
                           "also run the schedule with each action's time drawn around its cost (a lognormal "
                           "factor of mean 1 and this spread of its log, e.g. 0.1) and print the step's mean, "
                           "median and 90th percentile over --trials runs"));
  at_least(cmd->add_option("--trials", opts->trials, "runs of the schedule under --jitter")->capture_default_str(),
           1);
  cmd->add_flag("--compare", opts->compare,
                "instead of drawing one schedule, compare every one on these devices, micro-batches and costs: a "
                "line each with its bubble and the activations each device holds at once");
  cmd->callback([cmd, opts] {
    std::optional<Plan> plan;
    std::vector<Module> programs;  // parsed only to price them on a profile
    if (opts->plan.empty() && !opts->profile.empty())
      throw Error("--profile prices a plan's stages: give the plan (pipeforge schedule PLAN.json --profile P)");
    if (!opts->plan.empty() && !opts->costs.empty())
      throw Error(fmt::format("--costs: {} has its stages' own costs; drop the flag (or give --profile to price "
                              "them on a device profile)",
                              opts->plan));
    const std::string& source = opts->file.empty() ? opts->plan : opts->file;
    if (!source.empty()) {
      if (!opts->plan.empty()) plan = load_plan(opts->plan, opts->profile.empty() ? nullptr : &programs);
      for (const char* flag : {"--stages", "--microbatches", "--schedule", "--virtual"})
        if (cmd->count(flag) > 0)
          throw Error(fmt::format("{}: the schedule comes from {}; drop the flag{}", flag, source,
                                  opts->file.empty() ? ", or compile the plan again" : ""));
    }
    if (!source.empty() && opts->extra_warmup > 0)
      throw Error(fmt::format("--extra-warmup: {} has its own lists; drop the flag (or write them with more "
                              "forwards ahead)",
                              source));
    if (opts->jitter > 0 && !opts->profile.empty())
      throw Error("--jitter runs a plan on the costs the compiler predicted for its stages; drop --profile");
    std::optional<Schedule> written;
    if (!opts->file.empty()) written = read_schedule_file(opts->file);
    if (plan && written) run_written_lists(*plan, opts->plan, *written, opts->file);
    const UnitCosts costs = unit_costs(opts->costs, "--costs");
    if (opts->compare) {
      if (!source.empty())
        throw Error(fmt::format("--compare sets every schedule side by side on unit costs; {} has its own lists: "
                                "draw it without --compare",
                                source));
      for (const char* flag : {"--schedule", "--format"})
        if (cmd->count(flag) > 0) throw Error(fmt::format("{}: --compare lists every schedule as text; drop it", flag));
      return write_output(opts->output, compare_schedules(*opts, costs));
    }
    Schedule schedule = plan ? plan_schedule(*plan) : written ? *written : generated_schedule(*opts, costs);
    if (opts->format == "list") return write_output(opts->output, write_schedule_text(schedule));
    if (opts->format == "csv") return write_output(opts->output, write_torch_schedule_csv(schedule));
    Simulation sim =
        plan ? plan_simulation(*plan, programs, opts->profile, schedule) : simulate(schedule, costs);
    // A plan's costs are times; unit costs have no unit.
    const bool timed = plan && (!opts->profile.empty() || plan->stages.front().predicted.forward_s > 0);
    const std::string_view unit = timed ? "ms" : "";
    std::string out = opts->format == "svg" ? render_schedule_svg(schedule, sim, unit)
                                            : render_schedule_text(schedule, sim, unit);
    if (opts->jitter > 0 && opts->format == "text") {
      const Jitter jitter{opts->jitter, opts->trials};
      const JitteredSimulation j = plan ? simulate_jittered(schedule, plan_action_costs(*plan), jitter)
                                        : simulate_jittered(schedule, costs, jitter);
      out += fmt::format("jitter {:g}, {} trials: {}\n", opts->jitter, opts->trials,
                         jitter_summary(j, timed ? 1e3 : 1));
    }
    if (plan && opts->format == "text") {
      // Each device's list runs on one rank per replica.
      out += "\nranks:\n";
      for (int d = 0; d < schedule.devices; ++d) {
        std::string ranks;
        for (const PlanRank& r : plan->ranks)
          if (r.rank % schedule.devices == d)
            ranks += fmt::format("{}rank {} on {} (replica {})", ranks.empty() ? "" : ", ", r.rank,
                                 plan->devices[static_cast<size_t>(r.device)].name, r.replica);
        out += fmt::format("dev {}: {}\n", d, ranks);
      }
    }
    write_output(opts->output, out);
    if (opts->format == "svg" && !opts->output.empty())
      std::cout << fmt::format("wrote {}; bubble {:.1f}%\n", opts->output, 100 * sim.bubble_fraction);
  });
}

}  // namespace pf::tools
