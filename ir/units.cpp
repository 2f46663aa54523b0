// Human-readable numbers.
#include "ir/units.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "ir/diagnostic.h"

namespace pf {

std::string format_count(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int unit = 0;
  while (std::fabs(bytes) >= 1024 && unit < 5) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[unit]);
}

std::string format_flops(double flops) {
  static constexpr const char* kUnits[] = {"FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP"};
  int unit = 0;
  while (std::fabs(flops) >= 1000 && unit < 6) {
    flops /= 1000;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} FLOP", flops) : fmt::format("{:.1f} {}", flops, kUnits[unit]);
}

std::string format_seconds(double s) {
  return std::fabs(s) >= 1 ? fmt::format("{:.3f} s", s) : fmt::format("{:.3f} ms", s * 1e3);
}

int64_t parse_bytes(std::string_view text) {
  std::string s(text);
  char* end = nullptr;
  double value = std::strtod(s.c_str(), &end);
  std::string_view unit(end);
  struct Unit {
    std::string_view name;
    double scale;
  };
  static constexpr Unit kUnits[] = {{"", 1},         {"B", 1},          {"KiB", 1024.0},   {"MiB", 1048576.0},
                                    {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}, {"KB", 1e3},
                                    {"MB", 1e6},     {"GB", 1e9},       {"TB", 1e12}};
  if (end != s.c_str() && std::isfinite(value) && value > 0)
    for (const Unit& u : kUnits)
      if (u.name == unit && value * u.scale < 9.0e18) return static_cast<int64_t>(value * u.scale);
  throw Error(fmt::format("'{}' is not a size; write it like 2GiB, 512MiB or 1.5GB", text));
}

}  // namespace pf
