// Range checks on numeric options, with a sentence for an answer.
#include "tools/option_checks.h"

#include <fmt/format.h>

#include <cstdlib>
#include <string>

namespace pf::tools {

namespace {

/// A value out of range: a usage error whose message is the whole sentence.
/// (CLI11 puts "NAME: " before any ValidationError's message; this one is
/// thrown past it, and main reports it as any other parse error.)
class OutOfRange : public CLI::ParseError {
 public:
  explicit OutOfRange(const std::string& message)
      : CLI::ParseError("OutOfRange", message, CLI::ExitCodes::ValidationError) {}
};

/// Parses `text` as a number; false for anything else, which CLI11's own
/// conversion then reports.
bool number(const std::string& text, double& value) {
  if (text.empty()) return false;
  char* end = nullptr;
  value = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

/// What the help shows beside the type, as CLI11's own checks do:
/// "INT:POSITIVE", "FLOAT:NONNEGATIVE", "INT:>=2".
std::string help_name(double bound, bool inclusive) {
  if ((inclusive && bound == 1) || (!inclusive && bound == 0)) return "POSITIVE";
  if (inclusive && bound == 0) return "NONNEGATIVE";
  return fmt::format("{}{}", inclusive ? ">=" : ">", bound);
}

CLI::Option* check(CLI::Option* option, double bound, bool inclusive) {
  const std::string name = option->get_name();
  const std::string rule = fmt::format("{} {}", inclusive ? "at least" : "more than", bound);
  option->check(CLI::Validator(
      [name, rule, bound, inclusive](std::string& text) {
        double value = 0;
        if (number(text, value) && (inclusive ? value < bound : value <= bound))
          throw OutOfRange(fmt::format("{} must be {}, not {}", name, rule, text));
        return std::string();
      },
      help_name(bound, inclusive)));
  return option;
}

}  // namespace

CLI::Option* at_least(CLI::Option* option, double min) { return check(option, min, true); }

CLI::Option* more_than(CLI::Option* option, double bound) { return check(option, bound, false); }

CLI::Option* fraction(CLI::Option* option) {
  const std::string name = option->get_name();
  option->check(CLI::Validator(
      [name](std::string& text) {
        double value = 0;
        if (number(text, value) && !(value > 0 && value <= 1))
          throw OutOfRange(fmt::format("{} must be more than 0 and at most 1, not {}", name, text));
        return std::string();
      },
      "(0,1]"));
  return option;
}

}  // namespace pf::tools
