// `pipeforge plot`: the loss curves of runs logged with `pipeforge run --log`,
// one line per run, as an SVG chart.
#include <fmt/format.h>

#include <memory>

#include "ir/diagnostic.h"
#include "tools/command.h"
#include "tools/metrics_log.h"
#include "tools/svg_plot.h"

namespace pf::tools {

namespace {

struct PlotOptions {
  std::vector<std::string> logs;
  std::string output;
  std::string title = "loss";
};

/// Each log's training loss as a solid line and its validation loss, where
/// it has one, dashed with markers in the same colour.
LineChart loss_chart(const PlotOptions& o) {
  LineChart chart;
  chart.title = o.title;
  chart.x_label = "step";
  chart.y_label = "loss";
  int colour = 0;
  for (const std::string& path : o.logs) {
    const LossCurves curves = read_loss_curves(path);
    if (curves.train.empty() && curves.validation.empty())
      throw Error(fmt::format("{}: no loss in it (write one with pipeforge run ... --log {})", path, path));
    auto points = [](const std::vector<std::pair<int64_t, double>>& curve) {
      std::vector<std::pair<double, double>> out;
      for (const auto& [step, loss] : curve) out.emplace_back(static_cast<double>(step), loss);
      return out;
    };
    if (!curves.train.empty()) chart.series.push_back({path, points(curves.train), colour, false});
    if (!curves.validation.empty())
      chart.series.push_back({path + " (validation)", points(curves.validation), colour, true});
    ++colour;
  }
  return chart;
}

}  // namespace

void add_plot_command(CLI::App& app) {
  auto o = std::make_shared<PlotOptions>();
  CLI::App* cmd = app.add_subcommand(
      "plot", "draw the loss against the step of runs logged with pipeforge run --log, one line per run (SVG)");
  cmd->add_option("logs", o->logs, "logs (.jsonl) written by pipeforge run --log")->required();
  cmd->add_option("-o,--output", o->output, "write the SVG here instead of standard output");
  cmd->add_option("--title", o->title, "the chart's title");
  cmd->callback([o] { write_output(o->output, render_line_chart_svg(loss_chart(*o))); });
}

}  // namespace pf::tools
