// `pipeforge check`: parse, verify and size a model.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "ir/units.h"
#include "passes/cost_summary.h"
#include "passes/pipeline.h"
#include "tools/command.h"

namespace pf::tools {

namespace {
struct CheckOptions {
  std::string file;
  std::string bind;
  bool inference = false;
  bool split = false;
};

std::string binding_str(const DimBinding& b) {
  std::string out;
  for (const auto& [name, value] : b) out += (out.empty() ? "" : ", ") + name + "=" + std::to_string(value);
  return out;
}
}  // namespace

void add_check_command(CLI::App& app) {
  auto opts = std::make_shared<CheckOptions>();
  CLI::App* cmd = app.add_subcommand("check", "parse and verify a model; print its parameters and FLOPs");
  cmd->add_option("file", opts->file, "model file (.pf), or - for standard input")->required();
  add_bind_option(*cmd, opts->bind);
  cmd->add_flag("--inference", opts->inference, "the graph need not return a scalar loss");
  add_split_option(*cmd, opts->split);
  cmd->callback([opts] {
    std::cout << for_each_input(opts->file, opts->split, [&](std::shared_ptr<const SourceFile> source) {
      LoadedModel model = load_model(std::move(source), opts->bind, !opts->inference);
      PassContext ctx{model.binding};
      run_pipeline(model.module, PassPipeline::model, ctx);
      const Function& graph = model.module.graph();
      ModelCost cost = summarize_cost(graph, model.binding);
      std::string out = fmt::format("{}: ok\n", opts->file);
      out += fmt::format("  graph @{}: {} layers, {} ops after inlining ({})\n", graph.name, cost.layers.size(),
                         cost.total.ops, binding_str(model.binding));
      out += fmt::format("  parameters: {} ({})\n", format_count(cost.total.params),
                         format_bytes(static_cast<double>(cost.total.param_bytes)));
      out += fmt::format("  forward FLOPs per sample: {} ({} per batch of {})\n",
                         format_flops(static_cast<double>(cost.total.flops) / static_cast<double>(cost.batch)),
                         format_flops(static_cast<double>(cost.total.flops)), cost.batch);
      return out;
    });
  });
}

}  // namespace pf::tools
