// `pipeforge schedule`: draw a pipeline schedule and its bubble on unit costs.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "runtime/schedule.h"
#include "tools/command.h"

namespace pf::tools {

namespace {
struct ScheduleOptions {
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
  cmd->add_option("--stages,-p", opts->stages, "pipeline devices")->check(CLI::PositiveNumber);
  cmd->add_option("--microbatches,-m", opts->microbatches, "micro-batches per step")->check(CLI::PositiveNumber);
  cmd->add_option("--schedule,-s", opts->kind, "gpipe, 1f1b, interleaved or zb1")
      ->check(CLI::IsMember({"gpipe", "1f1b", "interleaved", "zb1"}));
  cmd->add_option("--virtual,-v", opts->virtual_stages, "model chunks per device (interleaved)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--format", opts->format, "text or svg")->check(CLI::IsMember({"text", "svg"}));
  cmd->add_option("-o,--output", opts->output, "write the drawing here instead of standard output");
  cmd->callback([opts] {
    Schedule schedule =
        make_schedule(*parse_schedule_kind(opts->kind), opts->stages, opts->microbatches, opts->virtual_stages);
    Simulation sim = simulate(schedule);
    std::string out = opts->format == "svg" ? render_schedule_svg(schedule, sim) : render_schedule_text(schedule, sim);
    write_output(opts->output, out);
    if (opts->format == "svg" && !opts->output.empty())
      std::cout << fmt::format("wrote {}; bubble {:.1f}%\n", opts->output, 100 * sim.bubble_fraction);
  });
}

}  // namespace pf::tools
