// Deterministic random numbers.
#include "runtime/random.h"

#include <cmath>
#include <numbers>

namespace pf {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

std::pair<double, double> normal_pair(std::mt19937_64& rng) {
  // u1 is in (0, 1] so the logarithm is finite.
  const double u1 = static_cast<double>((rng() >> 11) + 1) * 0x1.0p-53;
  const double u2 = uniform01(rng);
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double a = 2.0 * std::numbers::pi * u2;
  return {r * std::cos(a), r * std::sin(a)};
}

void fill_normal(std::mt19937_64& rng, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 2) {
    auto [z0, z1] = normal_pair(rng);
    out[i] = static_cast<float>(z0);
    if (i + 1 < n) out[i + 1] = static_cast<float>(z1);
  }
}

}  // namespace pf
