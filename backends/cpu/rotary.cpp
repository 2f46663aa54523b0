// rope: rotary position embedding, each position's feature pairs (i, i + D/2) turned by its angles.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "ir/dtype.h"

namespace pf::cpu {

namespace {

// The position of row p along the positions' axis: p itself, or the p-th
// of the positions operand.
int64_t position_at(const KernelArgs& args, int64_t p) {
  if (args.in.size() < 2) return p;
  if (args.in_types[1].dtype == DType::i64) return static_cast<const int64_t*>(args.in[1])[p];
  return static_cast<const int32_t*>(args.in[1])[p];
}

// The angles are computed in double and rounded once to T, so every
// position's cosines and sines are the correctly rounded values whatever
// its size (an angle of 4000 radians in float would be off by 2e-4).
template <class T>
void rope(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const RopeLayout l = rope_layout(args.attrs, args.in_types[0]);
  const int64_t half = l.features / 2;
  if (l.outer * l.positions * l.rows * half == 0) return;
  const double theta = rope_theta(args.attrs), sign = args.attrs.get_bool("inverse", false) ? -1.0 : 1.0;

  // Each position's cosines and sines, shared by every row that has it.
  auto* table = static_cast<T*>(scratch(sizeof(T) * 2 * static_cast<size_t>(l.positions * half)));
  parallel_for(l.positions, std::max<int64_t>(1, kElementwiseGrain / (8 * half)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const auto position = static_cast<double>(position_at(args, p));
      T* cos_row = table + 2 * p * half;
      T* sin_row = cos_row + half;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = position * rope_frequency(theta, i, l.features);
        cos_row[i] = static_cast<T>(std::cos(angle));
        sin_row[i] = static_cast<T>(sign * std::sin(angle));
      }
    }
  });

  // Rows of [outer, positions, rows]; each reads both halves before writing,
  // so x and y may be one buffer.
  const int64_t rows = l.outer * l.positions * l.rows;
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / l.features), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t p = r / l.rows % l.positions;
      const T* cos_row = table + 2 * p * half;
      const T* sin_row = cos_row + half;
      const T* xr = x + r * l.features;
      T* yr = y + r * l.features;
      for (int64_t i = 0; i < half; ++i) {
        const T a = xr[i], b = xr[half + i];
        yr[i] = a * cos_row[i] - b * sin_row[i];
        yr[half + i] = b * cos_row[i] + a * sin_row[i];
      }
    }
  });
}

}  // namespace

void add_rotary_kernels(KernelTable& table) { table.set_float(OpKind::rope, rope<float>, rope<double>); }

}  // namespace pf::cpu
