// Line charts as SVG, written by hand (no dependencies): axes with ticks and
// labels, one colour per series, solid lines or dashed lines with markers,
// and a legend. `pipeforge plot` draws loss curves with it.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace pf::tools {

/// One line of a chart.
struct ChartSeries {
  std::string name;                              // its legend entry
  std::vector<std::pair<double, double>> points;  // (x, y), in x order
  int colour = 0;                                // index into the palette (wraps around)
  bool dashed = false;                           // dashed, with a marker on every point (else solid)
};

/// A chart: its series share the axes, which span them all.
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
};

/// The chart as a standalone SVG document. Series without points are listed
/// in the legend only; a chart with no points at all draws empty axes.
std::string render_line_chart_svg(const LineChart& chart);

/// Round tick values covering [lo, hi]: about `target` of them, spaced by 1,
/// 2 or 5 times a power of ten, the first at or below lo and the last at or
/// above hi (lo == hi is widened around the value).
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

/// `text` with &, <, >, " and ' escaped for XML.
std::string xml_escape(const std::string& text);

}  // namespace pf::tools
