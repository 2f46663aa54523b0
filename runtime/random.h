// Deterministic random numbers that do not depend on the standard library's
// distributions (whose algorithms vary between implementations): datasets and
// parameter initialisation give the same numbers with every compiler.
#pragma once

#include <cstdint>
#include <random>
#include <string_view>
#include <utility>

namespace pf {

/// SplitMix64's output function: a bijection on 64 bits whose outputs for
/// nearby inputs look unrelated.
uint64_t splitmix64(uint64_t x);

/// FNV-1a of a string: seeds per-name streams (a parameter's initial values
/// depend on its name, not on where it sits in a model or a pipeline stage).
uint64_t fnv1a(std::string_view text);

/// Uniform in [0, 1) from the top 53 bits.
double uniform01(std::mt19937_64& rng);

/// Two independent N(0, 1) samples by the Box-Muller transform.
std::pair<double, double> normal_pair(std::mt19937_64& rng);

/// Fills `out` with n N(0, 1) samples, two per Box-Muller draw (the second
/// is dropped for odd n), so a fill always consumes the same number of
/// engine outputs.
void fill_normal(std::mt19937_64& rng, float* out, int64_t n);

}  // namespace pf
