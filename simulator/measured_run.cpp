// A real run's trace read back into what its actions and steps took.
#include "simulator/measured_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "ir/diagnostic.h"

namespace pf {

namespace {

/// One slice of the trace.
struct Slice {
  ActionKind kind;
  int device = 0, stage = 0;
  double start_s = 0, end_s = 0;
};

constexpr ActionKind kKinds[] = {ActionKind::forward,   ActionKind::backward, ActionKind::backward_input,
                                 ActionKind::backward_weight, ActionKind::send_act, ActionKind::recv_act,
                                 ActionKind::send_grad, ActionKind::recv_grad, ActionKind::step};

std::optional<ActionKind> kind_named(std::string_view name) {
  for (ActionKind k : kKinds)
    if (action_kind_name(k) == name) return k;
  return std::nullopt;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// The action slices of `doc`, by device in time order; metadata and
/// slices of other categories are left out.
std::vector<std::vector<Slice>> slices_by_device(const nlohmann::json& doc, const std::string& path) {
  const nlohmann::json* events = doc.is_object() && doc.contains("traceEvents") ? &doc["traceEvents"] : nullptr;
  if (!events || !events->is_array())
    throw Error(fmt::format("{}: not a trace: expected an object with a \"traceEvents\" array, as pipeforge run "
                            "--trace writes",
                            path));
  std::vector<std::vector<Slice>> devices;
  for (const nlohmann::json& e : *events) {
    if (!e.is_object() || e.value("ph", "") != "X" || !e.contains("cat") || !e["cat"].is_string()) continue;
    const std::optional<ActionKind> kind = kind_named(e["cat"].get<std::string>());
    if (!kind) continue;
    const nlohmann::json& args = e.contains("args") ? e["args"] : nlohmann::json::object();
    const bool well_formed = e.contains("tid") && e["tid"].is_number_integer() && e.contains("ts") &&
                             e["ts"].is_number() && e.contains("dur") && e["dur"].is_number() && args.is_object() &&
                             args.contains("stage") && args["stage"].is_number_integer();
    if (!well_formed)
      throw Error(fmt::format("{}: a {} slice without its tid, ts, dur or args.stage: {}", path,
                              e["cat"].get<std::string>(), e.dump()));
    const int device = e["tid"].get<int>();
    if (device < 0 || device > 1 << 20) throw Error(fmt::format("{}: a slice on track {}", path, device));
    const double start = e["ts"].get<double>() * 1e-6, dur = e["dur"].get<double>() * 1e-6;
    if (!std::isfinite(start) || !std::isfinite(dur) || dur < 0)
      throw Error(fmt::format("{}: a {} slice of {} us at {} us", path, e["cat"].get<std::string>(), e["dur"].dump(),
                              e["ts"].dump()));
    if (devices.size() <= static_cast<size_t>(device)) devices.resize(static_cast<size_t>(device) + 1);
    devices[static_cast<size_t>(device)].push_back({*kind, device, args["stage"].get<int>(), start, start + dur});
  }
  for (std::vector<Slice>& d : devices)
    std::stable_sort(d.begin(), d.end(), [](const Slice& a, const Slice& b) { return a.start_s < b.start_s; });
  return devices;
}

}  // namespace

MeasuredRun measure_trace(const std::string& text, const std::string& path) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not a trace: {}", path, e.what()));
  }
  std::vector<std::vector<Slice>> devices = slices_by_device(doc, path);
  devices.erase(std::remove_if(devices.begin(), devices.end(), [](const auto& d) { return d.empty(); }),
                devices.end());
  // Each device's steps: its slices up to and including each optimizer slice.
  std::vector<std::vector<std::vector<const Slice*>>> steps(devices.size());
  int step_count = -1;
  for (size_t d = 0; d < devices.size(); ++d) {
    std::vector<const Slice*> current;
    for (const Slice& s : devices[d]) {
      current.push_back(&s);
      if (s.kind == ActionKind::step) steps[d].push_back(std::exchange(current, {}));
    }
    const int n = static_cast<int>(steps[d].size());
    step_count = step_count < 0 ? n : std::min(step_count, n);
  }
  if (step_count <= 0)
    throw Error(fmt::format("{}: no training step in the trace: trace a run of the plan (pipeforge run PLAN --steps N "
                            "--trace FILE)",
                            path));

  MeasuredRun run;
  run.steps = step_count;
  run.devices = static_cast<int>(devices.size());
  const int first = step_count > 1 ? 1 : 0;  // the first step warms up; kept only when alone
  run.measured = step_count - first;
  std::vector<double> step_s, walk_s, bubble;
  std::map<std::pair<int, ActionKind>, std::vector<double>> durations;
  std::map<int, std::vector<double>> optimizer;
  // A step runs from the end of the one before (the first: from the first
  // slice) to the end of its last optimizer slice.
  double previous_end = devices.front().front().start_s;
  for (const std::vector<Slice>& d : devices) previous_end = std::min(previous_end, d.front().start_s);
  for (int k = 0; k < step_count; ++k) {
    double end = 0, last_compute = previous_end, busy = 0;
    for (size_t d = 0; d < devices.size(); ++d)
      for (const Slice* s : steps[d][static_cast<size_t>(k)]) {
        end = std::max(end, s->end_s);
        if (s->kind == ActionKind::step && k >= first) optimizer[s->device].push_back(s->end_s - s->start_s);
        if (!is_compute(s->kind)) continue;
        last_compute = std::max(last_compute, s->end_s);
        busy += s->end_s - s->start_s;
        if (k >= first) durations[{s->stage, s->kind}].push_back(s->end_s - s->start_s);
      }
    if (k >= first) {
      const double walk = last_compute - previous_end;
      step_s.push_back(end - previous_end);
      walk_s.push_back(walk);
      bubble.push_back(walk > 0 ? 1 - busy / (static_cast<double>(devices.size()) * walk) : 0);
    }
    previous_end = end;
  }
  run.step_s = median(step_s);
  run.walk_s = median(walk_s);
  run.bubble = median(bubble);
  for (const auto& [device, times] : optimizer) run.optimizer_s[device] = median(times);
  // The spread: every measured action against its stage and kind's median,
  // each weighed by that median, so that actions of no length (a first
  // stage's input gradient) do not count as noise: only time can be late.
  double weights = 0, weighted = 0;
  std::vector<std::pair<double, double>> logs;  // (log of the ratio, weight)
  for (const auto& [key, times] : durations) {
    const double mid = median(times);
    run.action_s[key] = mid;
    if (mid > 0)
      for (double t : times)
        if (t > 0) {
          logs.emplace_back(std::log(t / mid), mid);
          weights += mid;
          weighted += mid * logs.back().first;
        }
  }
  if (weights > 0) {
    const double mean = weighted / weights;
    double square = 0;
    for (const auto& [x, w] : logs) square += w * (x - mean) * (x - mean);
    run.log_spread = std::sqrt(square / weights);
  }
  return run;
}

}  // namespace pf
