// Range checks on numeric options that answer in a sentence naming the
// option ("--steps must be at least 1, not 0") rather than CLI11's
// "Value 0 not in range 0.000000 to 1.797693e+308".
#pragma once

#include <CLI/CLI.hpp>

namespace pf::tools {

/// `option`'s value must be at least `min`; returns `option` so that calls
/// chain. A value below fails parsing (a usage error, exit status 2) with
/// "--NAME must be at least MIN, not VALUE".
CLI::Option* at_least(CLI::Option* option, double min);

/// `option`'s value must be greater than `bound` (for real numbers such as a
/// timeout): "--NAME must be more than BOUND, not VALUE".
CLI::Option* more_than(CLI::Option* option, double bound);

/// `option`'s value must be a fraction: more than 0 and at most 1 (such as
/// a probability to keep): "--NAME must be more than 0 and at most 1, not VALUE".
CLI::Option* fraction(CLI::Option* option);

}  // namespace pf::tools
