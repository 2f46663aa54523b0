// `pipeforge run --log` and `pipeforge plot`: the log's records, reading them
// back, the estimated time left, and the chart's SVG.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "ir/diagnostic.h"
#include "tools/metrics_log.h"
#include "tools/svg_plot.h"

namespace pf::tools {
namespace {

namespace fs = std::filesystem;

std::string temp_file(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("pf_metrics_log_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

StepMetrics a_step(int64_t step, double loss) {
  StepMetrics m;
  m.step = step;
  m.loss = loss;
  m.lr = 0.001;
  m.grad_norm = 1.5;
  m.seconds = 0.25;
  m.samples_per_s = 64;
  m.bubble = 0.5;
  m.activation_bytes = {1024, 512};
  return m;
}

TEST(MetricsLog, WritesOneJsonLinePerStepAndPerEvaluation) {
  const std::string path = temp_file("steps.jsonl");
  {
    MetricsLog log(path, false);
    log.step(a_step(1, 2.5));
    StepMetrics tokens = a_step(2, 2.25);
    tokens.tokens_per_s = 4096;
    tokens.packed_weight_bytes = {0, 2048};
    log.step(tokens);
    log.eval(2, 2.125);
    // Each line is on disk as soon as it is written (a killed run keeps it).
    const std::string written = read_all(path);
    EXPECT_EQ(std::count(written.begin(), written.end(), '\n'), 3);
  }
  EXPECT_EQ(read_all(path),
            "{\"step\":1,\"loss\":2.5,\"lr\":0.001,\"grad_norm\":1.5,\"seconds\":0.25,\"samples_per_s\":64.0,"
            "\"bubble\":0.5,\"activation_bytes\":[1024,512]}\n"
            "{\"step\":2,\"loss\":2.25,\"lr\":0.001,\"grad_norm\":1.5,\"seconds\":0.25,\"samples_per_s\":64.0,"
            "\"tokens_per_s\":4096.0,\"bubble\":0.5,\"activation_bytes\":[1024,512],"
            "\"packed_weight_bytes\":[0,2048]}\n"
            "{\"step\":2,\"val_loss\":2.125}\n");
  const LossCurves curves = read_loss_curves(path);
  EXPECT_EQ(curves.train, (std::vector<std::pair<int64_t, double>>{{1, 2.5}, {2, 2.25}}));
  EXPECT_EQ(curves.validation, (std::vector<std::pair<int64_t, double>>{{2, 2.125}}));
}

TEST(MetricsLog, ALogWithoutAPathWritesNothing) {
  MetricsLog log("", false);
  EXPECT_FALSE(log.enabled());
  log.step(a_step(1, 2.5));  // the other ranks of a job of processes
  log.eval(1, 2.0);
}

TEST(MetricsLog, AResumedRunAppendsAndAStepLoggedTwiceKeepsItsLastLoss) {
  const std::string path = temp_file("resumed.jsonl");
  {
    MetricsLog log(path, false);
    log.step(a_step(1, 3.0));
    log.step(a_step(2, 2.0));
  }
  {
    MetricsLog log(path, true);  // resumed from the checkpoint of step 1
    log.step(a_step(2, 2.5));
    log.step(a_step(3, 1.5));
  }
  EXPECT_EQ(read_loss_curves(path).train, (std::vector<std::pair<int64_t, double>>{{1, 3.0}, {2, 2.5}, {3, 1.5}}));
  {
    MetricsLog log(path, false);  // a new run starts afresh
    log.step(a_step(1, 4.0));
  }
  EXPECT_EQ(read_loss_curves(path).train, (std::vector<std::pair<int64_t, double>>{{1, 4.0}}));
}

TEST(MetricsLog, ALossThatIsNotFiniteIsNullAndNoPoint) {
  const std::string path = temp_file("nan.jsonl");
  {
    MetricsLog log(path, false);
    StepMetrics m = a_step(1, std::nan(""));
    m.grad_norm = std::numeric_limits<double>::infinity();
    m.skipped = true;
    log.step(m);
    log.step(a_step(2, 2.0));
  }
  EXPECT_NE(read_all(path).find("\"loss\":null"), std::string::npos);
  EXPECT_NE(read_all(path).find("\"skipped\":true"), std::string::npos);
  EXPECT_EQ(read_loss_curves(path).train, (std::vector<std::pair<int64_t, double>>{{2, 2.0}}));
}

TEST(MetricsLog, ALastLineCutShortByAKillIsLeftOutButABadLineIsAnError) {
  const std::string cut = temp_file("cut.jsonl");
  std::ofstream(cut) << "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"lo";
  EXPECT_EQ(read_loss_curves(cut).train, (std::vector<std::pair<int64_t, double>>{{1, 2.0}}));

  const std::string bad = temp_file("bad.jsonl");
  std::ofstream(bad) << "{\"step\":1,\"loss\":2.0}\nnot json\n{\"step\":3,\"loss\":1.0}\n";
  try {
    read_loss_curves(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), bad + ":2: not a JSON object (is this a log written by pipeforge run --log?)");
  }
  const std::string no_step = temp_file("no_step.jsonl");
  std::ofstream(no_step) << "{\"loss\":2.0}\n";
  try {
    read_loss_curves(no_step);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(no_step + ":1: "), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("step"), std::string::npos) << e.message();
  }
}

TEST(EtaEstimate, ShownFromTheThirdStepOfALongRunAndNotOnTheLast) {
  EtaEstimate eta(100);
  EXPECT_EQ(eta.after_step(5.0), "");   // the first step: warm-up, left out of the rate
  EXPECT_EQ(eta.after_step(6.0), "");
  EXPECT_EQ(eta.after_step(7.0), "eta 1m37s");  // 1 s a step, 97 to go
  for (int64_t s = 4; s < 100; ++s) eta.after_step(static_cast<double>(s) + 4);
  EXPECT_EQ(eta.after_step(104.0), "");  // done
}

TEST(EtaEstimate, AShortQuickRunKeepsItsLinesButAShortSlowOneGetsIt) {
  EtaEstimate quick(10);
  for (int s = 1; s <= 10; ++s) EXPECT_EQ(quick.after_step(0.1 * s), "") << s;
  EtaEstimate slow(10);
  slow.after_step(10);
  slow.after_step(20);
  EXPECT_EQ(slow.after_step(30), "eta 1m10s");
}

TEST(EtaEstimate, Durations) {
  EXPECT_EQ(format_duration(0.4), "0s");
  EXPECT_EQ(format_duration(7.2), "7s");
  EXPECT_EQ(format_duration(192.4), "3m12s");
  EXPECT_EQ(format_duration(3725), "1h02m");
}

TEST(SvgPlot, NiceTicksCoverTheRangeWithRoundSteps) {
  auto expect_ticks = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
  };
  expect_ticks(nice_ticks(1, 30), {0, 5, 10, 15, 20, 25, 30});
  expect_ticks(nice_ticks(1, 300), {0, 50, 100, 150, 200, 250, 300});
  expect_ticks(nice_ticks(2.07, 2.83), {2.0, 2.2, 2.4, 2.6, 2.8, 3.0});
  expect_ticks(nice_ticks(0, 1000), {0, 200, 400, 600, 800, 1000});
  const std::vector<double> one = nice_ticks(5, 5);  // widened around the value
  EXPECT_LT(one.front(), 5);
  EXPECT_GT(one.back(), 5);
}

TEST(SvgPlot, DrawsEachSeriesWithItsLegendEntry) {
  LineChart chart;
  chart.title = "loss";
  chart.x_label = "step";
  chart.y_label = "loss";
  chart.series.push_back({"a<1>.jsonl", {{1, 2.5}, {2, 2.0}, {3, 1.5}}, 0, false});
  chart.series.push_back({"a<1>.jsonl (validation)", {{2, 2.2}}, 0, true});
  chart.series.push_back({"b.jsonl", {{1, 2.6}, {3, 2.4}}, 1, false});
  const std::string svg = render_line_chart_svg(chart);
  EXPECT_TRUE(svg.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = svg.find(what); at != std::string::npos; at = svg.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<polyline "), 3u);
  EXPECT_EQ(count("stroke-dasharray"), 2u);  // the validation line and its legend sample
  EXPECT_EQ(count(">a&lt;1&gt;.jsonl</text>"), 1u);
  EXPECT_EQ(count(">a&lt;1&gt;.jsonl (validation)</text>"), 1u);
  EXPECT_EQ(count(">b.jsonl</text>"), 1u);
  EXPECT_EQ(count(">step</text>"), 1u);
  // Every element opened is closed: the document is well formed.
  EXPECT_EQ(count("<g"), count("</g>"));
  EXPECT_EQ(count("<text"), count("</text>"));
}

TEST(SvgPlot, XmlEscape) { EXPECT_EQ(xml_escape("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&apos;"); }

}  // namespace
}  // namespace pf::tools
