// `pipeforge run --log`: a JSON line per step and per evaluation; reading
// them back for `pipeforge plot`; the time a run has left.
#include "tools/metrics_log.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ir/diagnostic.h"
#include "support/json.h"

namespace pf::tools {

using Json = nlohmann::ordered_json;

StepMetrics step_metrics(int64_t step, const PipelineStepResult& r, int64_t samples, int64_t tokens) {
  StepMetrics m;
  m.step = step;
  m.loss = r.loss;
  m.lr = r.lr;
  m.grad_norm = r.grad_norm;
  m.seconds = r.seconds;
  m.samples_per_s = r.seconds > 0 ? static_cast<double>(samples) / r.seconds : 0;
  m.tokens_per_s = r.seconds > 0 ? static_cast<double>(tokens) / r.seconds : 0;
  m.bubble = r.bubble;
  m.activation_bytes = r.peak_stash_bytes;
  m.packed_weight_bytes = r.packed_weight_bytes;
  m.skipped = !std::isfinite(r.grad_norm);
  return m;
}

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  if (path_.empty()) return;
  file_.open(path_, append ? std::ios::app : std::ios::trunc);
  if (!file_) throw Error(fmt::format("--log: cannot write '{}'", path_));
}

void MetricsLog::write_line(const std::string& line) {
  if (!enabled()) return;
  // One write and a flush per record: a run killed between steps leaves
  // whole lines.
  file_ << line << '\n';
  if (!file_.flush()) throw Error(fmt::format("--log: writing '{}' failed", path_));
}

void MetricsLog::step(const StepMetrics& m) {
  if (!enabled()) return;
  // nlohmann writes a number that is not finite as null.
  Json record = {{"step", m.step},
                 {"loss", m.loss},
                 {"lr", m.lr},
                 {"grad_norm", m.grad_norm},
                 {"seconds", m.seconds},
                 {"samples_per_s", m.samples_per_s}};
  if (m.tokens_per_s > 0) record["tokens_per_s"] = m.tokens_per_s;
  record["bubble"] = m.bubble;
  record["activation_bytes"] = m.activation_bytes;
  if (std::any_of(m.packed_weight_bytes.begin(), m.packed_weight_bytes.end(), [](int64_t b) { return b > 0; }))
    record["packed_weight_bytes"] = m.packed_weight_bytes;
  if (m.skipped) record["skipped"] = true;
  write_line(record.dump());
}

void MetricsLog::eval(int64_t step, double val_loss, std::optional<double> accuracy) {
  if (!enabled()) return;
  Json record{{"step", step}, {"val_loss", val_loss}};
  if (accuracy) record["val_accuracy"] = *accuracy;
  write_line(record.dump());
}

LossCurves read_loss_curves(const std::string& path) {
  const std::string text = read_source_file(path)->text();
  std::map<int64_t, double> train, validation;
  std::istringstream lines(text);
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const JsonReader r(fmt::format("{}:{}", path, number));
    Json record = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded()) {
      // A run killed while it wrote a record leaves its last line cut short.
      const bool last = lines.peek() == std::char_traits<char>::eof() && !text.ends_with('\n');
      if (last) break;
      r.fail("not a JSON object (is this a log written by pipeforge run --log?)");
    }
    if (!record.is_object()) r.fail("not a JSON object (is this a log written by pipeforge run --log?)");
    const int64_t step = r.integer(record, "", "step", 0);
    // A loss that was not finite is null: no point on the curve.
    auto value = [&](const char* key, std::map<int64_t, double>& curve) {
      if (!record.contains(key) || record[key].is_null()) return;
      curve[step] = r.number(record, "", key);
    };
    value("loss", train);
    value("val_loss", validation);
  }
  return {{train.begin(), train.end()}, {validation.begin(), validation.end()}};
}

std::string EtaEstimate::after_step(double elapsed_s) {
  ++done_;
  if (done_ == 1) first_s_ = elapsed_s;
  if (done_ < 3 || done_ >= steps_) return "";
  const double per_step = (elapsed_s - first_s_) / static_cast<double>(done_ - 1);
  const double left = per_step * static_cast<double>(steps_ - done_);
  if (steps_ <= 20 && elapsed_s + left <= 30) return "";
  return "eta " + format_duration(left);
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
}

}  // namespace pf::tools
