// Line charts as SVG.
#include "tools/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "support/svg.h"

namespace pf::tools {

namespace {

// Tableau's ten colours: distinct, and readable on white.
constexpr std::array<const char*, 10> kPalette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                                  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

// The chart's frame, in pixels.
constexpr double kWidth = 760, kPlotHeight = 420;
constexpr double kLeft = 72, kRight = 24, kTop = 44, kBottom = 56;  // margins around the plot area
constexpr double kLegendLine = 20;

/// Digits after the point that tell ticks `spacing` apart.
int decimals(double spacing) { return std::max(0, static_cast<int>(-std::floor(std::log10(spacing) + 1e-9))); }

std::string tick_label(double value, int digits) {
  if (std::abs(value) < 1e-12) value = 0;  // no "-0.00"
  return fmt::format("{:.{}f}", value, digits);
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) {  // one value: a unit around it
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  // A little closer than `target` rather than much sparser: 0..30 by 5, not by 10.
  const double rough = (hi - lo) / std::max(1, target - 1) / 1.5;
  const double power = std::pow(10.0, std::floor(std::log10(rough)));
  double spacing = 10 * power;
  for (double m : {1.0, 2.0, 5.0})
    if (m * power >= rough) {
      spacing = m * power;
      break;
    }
  std::vector<double> ticks;
  const double first = std::floor(lo / spacing + 1e-9) * spacing, last = std::ceil(hi / spacing - 1e-9) * spacing;
  for (double t = first; t <= last + spacing / 2; t += spacing) ticks.push_back(std::round(t / spacing) * spacing);
  return ticks;
}

std::string render_line_chart_svg(const LineChart& chart) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const ChartSeries& s : chart.series)
    for (const auto& [x, y] : s.points) {
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  if (!std::isfinite(x_lo)) x_lo = x_hi = y_lo = y_hi = 0;
  const std::vector<double> x_ticks = nice_ticks(x_lo, x_hi), y_ticks = nice_ticks(y_lo, y_hi);
  const double x_min = x_ticks.front(), x_max = x_ticks.back(), y_min = y_ticks.front(), y_max = y_ticks.back();
  const double plot_w = kWidth - kLeft - kRight, plot_h = kPlotHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - x_min) / (x_max - x_min) * plot_w; };
  auto py = [&](double y) { return kTop + plot_h - (y - y_min) / (y_max - y_min) * plot_h; };
  const double height = kPlotHeight + kLegendLine * static_cast<double>(chart.series.size()) + 12;

  std::string out = svg_header(kWidth, height);
  out += fmt::format("<text x=\"{:.0f}\" y=\"24\" font-size=\"15\">{}</text>\n", kLeft, xml_escape(chart.title));
  out += fmt::format("<clipPath id=\"plot\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/>"
                     "</clipPath>\n",
                     kLeft, kTop, plot_w, plot_h);

  // Grid lines and tick labels.
  out += "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n";
  for (double t : x_ticks)
    out += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\"/>\n", px(t), kTop,
                       kTop + plot_h);
  for (double t : y_ticks)
    out += fmt::format("<line x1=\"{1:.1f}\" y1=\"{0:.1f}\" x2=\"{2:.1f}\" y2=\"{0:.1f}\"/>\n", py(t), kLeft,
                       kLeft + plot_w);
  out += "</g>\n";
  const int x_digits = decimals(x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1);
  const int y_digits = decimals(y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 1);
  out += "<g fill=\"#333\">\n";
  for (double t : x_ticks)
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", px(t),
                       kTop + plot_h + 16, tick_label(t, x_digits));
  for (double t : y_ticks)
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", kLeft - 6, py(t) + 4,
                       tick_label(t, y_digits));
  out += "</g>\n";
  // The axes and their labels.
  out += fmt::format("<path d=\"M{0:.1f},{1:.1f} V{2:.1f} H{3:.1f}\" fill=\"none\" stroke=\"#333\"/>\n", kLeft, kTop,
                     kTop + plot_h, kLeft + plot_w);
  out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", kLeft + plot_w / 2,
                     kTop + plot_h + 38, xml_escape(chart.x_label));
  out += fmt::format("<text transform=\"translate(18,{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                     kTop + plot_h / 2, xml_escape(chart.y_label));

  // The series, clipped to the plot area.
  out += "<g clip-path=\"url(#plot)\" fill=\"none\" stroke-width=\"1.5\" stroke-linejoin=\"round\">\n";
  for (const ChartSeries& s : chart.series) {
    if (s.points.empty()) continue;
    const char* colour = kPalette[static_cast<size_t>(s.colour) % kPalette.size()];
    std::string points;
    for (const auto& [x, y] : s.points)
      points += fmt::format("{}{:.1f},{:.1f}", points.empty() ? "" : " ", px(x), py(y));
    out += fmt::format("<polyline stroke=\"{}\"{} points=\"{}\"/>\n", colour,
                       s.dashed ? " stroke-dasharray=\"6 4\"" : "", points);
    if (s.dashed)
      for (const auto& [x, y] : s.points)
        out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\" stroke=\"none\"/>\n", px(x), py(y),
                           colour);
  }
  out += "</g>\n";

  // The legend, under the plot: a sample of each line and its name.
  out += "<g>\n";
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const ChartSeries& s = chart.series[i];
    const char* colour = kPalette[static_cast<size_t>(s.colour) % kPalette.size()];
    const double y = kPlotHeight + kLegendLine * static_cast<double>(i) + 4;
    out += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" "
                       "stroke-width=\"2\"{}/>\n",
                       kLeft, y, kLeft + 28, y, colour, s.dashed ? " stroke-dasharray=\"6 4\"" : "");
    if (s.dashed)
      out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", kLeft + 14, y, colour);
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", kLeft + 36, y + 4, xml_escape(s.name));
  }
  out += "</g>\n";
  return out + "</svg>\n";
}

}  // namespace pf::tools
