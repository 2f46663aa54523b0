// dropout(p, seed): a counter-based mask, the same whatever the threading or the dtype.
#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"

namespace pf::cpu {

namespace {

// splitmix64's output for counter `index` (0-based) from state `seed`.
uint64_t splitmix64(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Element i is kept iff u = (h >> 11) * 2^-53 >= p. Since h >> 11 is an
// integer and p * 2^53 is exact, that is (h >> 11) >= ceil(p * 2^53): the
// same decision as dropout_uniform() makes, without a float per element.
template <class T>
void dropout(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const int64_t n = args.out_types[0].numel();
  const double p = args.attrs.get_real("p", 0);
  const auto seed = static_cast<uint64_t>(args.attrs.get_int("seed", 0));
  const auto threshold = static_cast<uint64_t>(std::ceil(std::ldexp(p, 53)));
  const T scale = static_cast<T>(1 / (1 - p));
  for (int64_t i = 0; i < n; ++i)
    y[i] = (splitmix64(seed, static_cast<uint64_t>(i)) >> 11) >= threshold ? x[i] * scale : T(0);
}

}  // namespace

double dropout_uniform(uint64_t seed, uint64_t index) {
  return std::ldexp(static_cast<double>(splitmix64(seed, index) >> 11), -53);
}

void add_dropout_kernels(KernelTable& table) { table.set_float(OpKind::dropout, dropout<float>, dropout<double>); }

}  // namespace pf::cpu
