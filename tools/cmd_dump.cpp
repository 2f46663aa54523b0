// `pipeforge dump`: a plan as a picture (Graphviz DOT or SVG) or as a table.
#include <memory>

#include "ir/diagnostic.h"
#include "plan/plan.h"
#include "tools/command.h"
#include "tools/plan_render.h"

namespace pf::tools {

namespace {
struct DumpOptions {
  std::string plan;
  std::string format = "text";
  bool ops = false;
  std::string output;
};
}  // namespace

void add_dump_command(CLI::App& app) {
  auto opts = std::make_shared<DumpOptions>();
  CLI::App* cmd = app.add_subcommand(
      "dump", "draw a plan: its stages as coloured clusters with the cut tensors, and a table of their predictions");
  cmd->add_option("plan", opts->plan, "plan file (.json) written by 'pipeforge compile'")->required();
  cmd->add_option("--format", opts->format, "text (the stage table), dot (Graphviz) or svg (through Graphviz's dot)")
      ->check(CLI::IsMember({"text", "dot", "svg"}));
  cmd->add_flag("--ops", opts->ops, "draw one node per op instead of one per layer (dot and svg)");
  cmd->add_option("-o,--output", opts->output, "write here instead of standard output");
  cmd->callback([opts] {
    if (opts->ops && opts->format == "text") throw Error("--ops draws ops; it needs --format dot or svg");
    Plan plan = load_plan(opts->plan);
    std::string out;
    if (opts->format == "text")
      out = render_plan_text(plan);
    else if (opts->format == "dot")
      out = render_plan_dot(plan, opts->ops);
    else
      out = dot_to_svg(render_plan_dot(plan, opts->ops));
    write_output(opts->output, out);
  });
}

}  // namespace pf::tools
