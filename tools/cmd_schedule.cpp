// `pipeforge schedule`: draw a pipeline schedule and its bubble on unit costs.
#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <optional>

#include "ir/diagnostic.h"
#include "plan/plan.h"
#include "runtime/plan_schedule.h"
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
};
}  // namespace

void add_schedule_command(CLI::App& app) {
  auto opts = std::make_shared<ScheduleOptions>();
  CLI::App* cmd = app.add_subcommand(
      "schedule", "draw a pipeline schedule (F/B/W per micro-batch) and its bubble on unit costs");
  cmd->add_option("plan", opts->plan,
                  "a plan (.json): draw its schedule, with the ranks that run each device's list (the flags below "
                  "then come from the plan)");
  at_least(cmd->add_option("--stages,-p", opts->stages, "pipeline devices"), 1);
  at_least(cmd->add_option("--microbatches,-m", opts->microbatches, "micro-batches per step"), 1);
  cmd->add_option("--schedule,-s", opts->kind, "gpipe, 1f1b, interleaved or zb1")
      ->check(CLI::IsMember({"gpipe", "1f1b", "interleaved", "zb1"}));
  at_least(cmd->add_option("--virtual,-v", opts->virtual_stages, "model chunks per device (interleaved)"), 1);
  cmd->add_option("--format", opts->format, "text or svg")->check(CLI::IsMember({"text", "svg"}));
  cmd->add_option("-o,--output", opts->output, "write the drawing here instead of standard output");
  cmd->callback([cmd, opts] {
    std::optional<Plan> plan;
    if (!opts->plan.empty()) {
      plan = load_plan(opts->plan);
      for (const char* flag : {"--stages", "--microbatches", "--schedule", "--virtual"})
        if (cmd->count(flag) > 0)
          throw Error(fmt::format("{}: the schedule comes from {}; drop the flag, or compile the plan again",
                                  flag, opts->plan));
    }
    Schedule schedule =
        plan ? plan_schedule(*plan)
             : make_schedule(*parse_schedule_kind(opts->kind), opts->stages, opts->microbatches, opts->virtual_stages);
    Simulation sim = simulate(schedule);
    std::string out = opts->format == "svg" ? render_schedule_svg(schedule, sim) : render_schedule_text(schedule, sim);
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
