// Schedule pictures: a text grid for terminals and tests, an SVG timeline for people.
#include "runtime/schedule.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "support/svg.h"

namespace pf {
namespace {

void check_matches(const Schedule& schedule, const Simulation& sim) {
  if (sim.per_device.size() != static_cast<size_t>(schedule.devices))
    throw Error(fmt::format("render: simulation has {} devices, schedule has {}",
                            sim.per_device.size(), schedule.devices));
}

/// The shortest compute action: one text column, and the SVG's scale unit.
double shortest_compute(const Simulation& sim) {
  double shortest = 0;
  for (const auto& row : sim.per_device)
    for (const TimedAction& t : row)
      if (is_compute(t.action.kind) && (shortest == 0 || t.end - t.start < shortest))
        shortest = t.end - t.start;
  if (shortest <= 0) throw Error("render: simulation has no compute actions");
  return shortest;
}

std::string bubble_summary(const Schedule& schedule, const Simulation& sim) {
  std::string out = fmt::format("bubble: {:.1f}%", 100 * sim.bubble_fraction);
  if (std::optional<double> theory = theoretical_bubble(schedule, sim.costs))
    out += fmt::format(" (theory {:.1f}%)", 100 * *theory);
  return out;
}

std::string title(const Schedule& schedule) {
  return fmt::format("{} p={} m={} v={}", schedule_kind_name(schedule.kind), schedule.devices,
                     schedule.microbatches, schedule.virtual_stages);
}

}  // namespace

std::string render_schedule_text(const Schedule& schedule, const Simulation& sim, std::string_view unit_name) {
  check_matches(schedule, sim);
  const double unit = shortest_compute(sim);
  // Tolerance so that a makespan of exactly k units gives k columns, not k+1.
  const int columns = static_cast<int>(std::ceil(sim.makespan / unit - 1e-9));

  // One row of labels per device: each column shows the compute action
  // covering its midpoint, so off-grid times (comm > 0) still land somewhere.
  std::vector<std::vector<std::string>> cells(schedule.devices,
                                              std::vector<std::string>(columns, "."));
  size_t width = 1;
  for (int d = 0; d < schedule.devices; ++d) {
    for (const TimedAction& t : sim.per_device[d]) {
      if (!is_compute(t.action.kind)) continue;
      const std::string label = action_label(schedule, t.action);
      width = std::max(width, label.size());
      for (int c = static_cast<int>(t.start / unit); c < columns; ++c) {
        const double mid = (c + 0.5) * unit;
        if (mid >= t.end) break;
        if (mid >= t.start) cells[d][c] = label;
      }
    }
  }

  std::string out = unit_name.empty() ? fmt::format("{}, one column = {:g} time unit{}\n", title(schedule), unit,
                                                    unit == 1 ? "" : "s")
                                      : fmt::format("{}, one column = {:.3g} {}\n", title(schedule), unit, unit_name);
  const size_t name_width = std::to_string(schedule.devices - 1).size();
  for (int d = 0; d < schedule.devices; ++d) {
    std::string row = fmt::format("dev {:>{}}:", d, name_width);
    for (const std::string& cell : cells[d]) row += fmt::format(" {:<{}}", cell, width);
    row.erase(row.find_last_not_of(' ') + 1);
    out += row + "\n";
  }
  return out + bubble_summary(schedule, sim) + "\n";
}

namespace {

struct Rgb {
  double r, g, b;  // 0..1
};

Rgb kind_color(ActionKind kind) {
  switch (kind) {
    case ActionKind::forward: return {0.31, 0.47, 0.65};
    case ActionKind::backward_weight: return {0.95, 0.56, 0.17};
    default: return {0.35, 0.63, 0.31};
  }
}

/// Later chunks are lighter: mixed towards white, up to 55% for the last one.
Rgb shade(Rgb c, int chunk, int chunks) {
  const double t = chunks > 1 ? 0.55 * chunk / (chunks - 1) : 0;
  return {c.r + (1 - c.r) * t, c.g + (1 - c.g) * t, c.b + (1 - c.b) * t};
}

std::string hex(Rgb c) {
  auto byte = [](double x) { return static_cast<int>(std::lround(std::clamp(x, 0.0, 1.0) * 255)); };
  return fmt::format("#{:02x}{:02x}{:02x}", byte(c.r), byte(c.g), byte(c.b));
}

/// Black on light fills, white on dark ones.
std::string_view text_color(Rgb c) {
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b > 0.6 ? "#000000" : "#ffffff";
}

/// The tick spacing in time units: 1, 2 or 5 times a power of ten, at least
/// `min_px` apart at `scale` pixels per time unit.
double tick_step(double scale, double min_px) {
  const double raw = min_px / scale;
  double step = std::pow(10.0, std::floor(std::log10(raw)));
  for (double f : {1.0, 2.0, 5.0, 10.0})
    if (f * step >= raw) return f * step;
  return 10 * step;
}

}  // namespace

std::string render_schedule_svg(const Schedule& schedule, const Simulation& sim, std::string_view unit_name) {
  check_matches(schedule, sim);
  // The shortest action gets 28 px, unless that would make the picture wider
  // than 1600 px; labels are dropped from rects too narrow to hold them.
  const double unit = shortest_compute(sim);
  const double scale = std::max(1.0, std::min(28 / unit, 1600 / sim.makespan));
  const double left = 80, top = 44, row_height = 26, row_gap = 8;
  const double plot_width = sim.makespan * scale;
  const double rows_bottom = top + schedule.devices * (row_height + row_gap);
  const double width = left + plot_width + 20, height = rows_bottom + 70;

  std::string out = svg_header(width, height);
  const std::string heading = title(schedule) + ", " + bubble_summary(schedule, sim);
  out += fmt::format("<text x=\"{:.0f}\" y=\"24\" font-size=\"15\">{}</text>\n", left, heading);

  for (int d = 0; d < schedule.devices; ++d) {
    const double y = top + d * (row_height + row_gap);
    out += fmt::format("<text x=\"8\" y=\"{:.1f}\">device {}</text>\n", y + row_height / 2 + 4, d);
    for (const TimedAction& t : sim.per_device[d]) {
      if (!is_compute(t.action.kind)) continue;
      const Rgb fill =
          shade(kind_color(t.action.kind), schedule.chunk_of(t.action.stage), schedule.virtual_stages);
      const double x = left + t.start * scale, w = (t.end - t.start) * scale;
      out += fmt::format(
          "<rect class=\"action\" x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{:.1f}\" "
          "fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"1\"><title>{} [{:g}, "
          "{:g})</title></rect>\n",
          x, y, w, row_height, hex(fill), format_action(t.action), t.start, t.end);
      if (w >= 14)
        out += fmt::format(
            "<text x=\"{:.2f}\" y=\"{:.1f}\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
            x + w / 2, y + row_height / 2 + 4, text_color(fill), t.action.microbatch);
    }
  }

  // Time axis under the rows.
  const double axis_y = rows_bottom + 4;
  out += fmt::format(
      "<line x1=\"{0:.0f}\" y1=\"{1:.1f}\" x2=\"{2:.2f}\" y2=\"{1:.1f}\" "
      "stroke=\"#000000\"/>\n",
      left, axis_y, left + plot_width);
  const double step = tick_step(scale, 40);
  for (int i = 0; i * step <= sim.makespan + 1e-9; ++i) {
    const double x = left + i * step * scale;
    out += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.1f}\" x2=\"{0:.2f}\" y2=\"{2:.1f}\" "
        "stroke=\"#000000\"/>\n",
        x, axis_y, axis_y + 5);
    out += fmt::format("<text x=\"{:.2f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:g}</text>\n", x,
                       axis_y + 18, i * step);
  }
  out += fmt::format("<text x=\"8\" y=\"{:.1f}\">time{}</text>\n", axis_y + 18,
                     unit_name.empty() ? "" : fmt::format(" ({})", unit_name));

  // Legend: the kinds this schedule uses, then what the shading means.
  const bool split = schedule.split_backward;
  std::vector<std::pair<ActionKind, std::string_view>> legend = {
      {ActionKind::forward, "F forward"},
      {split ? ActionKind::backward_input : ActionKind::backward,
       split ? "B input gradient" : "B backward"}};
  if (split) legend.push_back({ActionKind::backward_weight, "W weight gradient"});
  double x = left;
  const double legend_y = axis_y + 34;
  for (const auto& [kind, text] : legend) {
    out += fmt::format("<rect x=\"{:.0f}\" y=\"{:.1f}\" width=\"14\" height=\"14\" fill=\"{}\"/>\n",
                       x, legend_y - 11, hex(kind_color(kind)));
    out += fmt::format("<text x=\"{:.0f}\" y=\"{:.1f}\">{}</text>\n", x + 20, legend_y, text);
    x += 150;
  }
  if (schedule.virtual_stages > 1)
    out +=
        fmt::format("<text x=\"{:.0f}\" y=\"{:.1f}\">lighter = later chunk</text>\n", x, legend_y);
  return out + "</svg>\n";
}

}  // namespace pf
