// `pipeforge stats`: a per-layer table of parameters, FLOPs and activations.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "ir/units.h"
#include "passes/cost_summary.h"
#include "passes/pipeline.h"
#include "tools/command.h"

namespace pf::tools {

namespace {
struct StatsOptions {
  std::string file;
  std::string bind;
};
}  // namespace

void add_stats_command(CLI::App& app) {
  auto opts = std::make_shared<StatsOptions>();
  CLI::App* cmd = app.add_subcommand("stats", "print a per-layer table of parameters, FLOPs and activation bytes");
  cmd->add_option("file", opts->file, "model file (.pf), or - for standard input")->required();
  add_bind_option(*cmd, opts->bind);
  cmd->callback([opts] {
    LoadedModel model = load_model(opts->file, opts->bind, false);
    PassContext ctx{model.binding};
    run_pipeline(model.module, PassPipeline::model, ctx);
    const Function& graph = model.module.graph();
    ModelCost cost = summarize_cost(graph, model.binding);

    size_t width = 5;
    for (const LayerCost& l : cost.layers) width = std::max(width, l.layer.size());
    std::string out = fmt::format("model @{}, batch {}\n", graph.name, cost.batch);
    out += fmt::format("{:<{}}  {:>5}  {:>13}  {:>13}  {:>13}\n", "layer", width, "ops", "parameters", "fwd FLOPs",
                       "activations");
    auto row = [&](const LayerCost& l) {
      return fmt::format("{:<{}}  {:>5}  {:>13}  {:>13}  {:>13}\n", l.layer, width, l.ops, format_count(l.params),
                         format_flops(static_cast<double>(l.flops)),
                         format_bytes(static_cast<double>(l.activation_bytes)));
    };
    for (const LayerCost& l : cost.layers) out += row(l);
    out += std::string(width + 53, '-') + "\n";
    out += row(cost.total);
    out += fmt::format("parameters: {} ({}); forward FLOPs per sample: {}\n", format_count(cost.total.params),
                       format_bytes(static_cast<double>(cost.total.param_bytes)),
                       format_flops(static_cast<double>(cost.total.flops) / static_cast<double>(cost.batch)));
    std::cout << out;
  });
}

}  // namespace pf::tools
