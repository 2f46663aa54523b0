// The median of a benchmark's samples (the mean of the middle two for an even count).
#pragma once

#include <algorithm>
#include <vector>

namespace pf::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace pf::bench
