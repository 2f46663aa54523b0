// rope: rotary position embedding, each position's feature pairs (i, i + D/2) turned by its angles.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "ir/dtype.h"

namespace pf::cpu {

namespace {

// The sequences whose positions the positions operand gives apart: B for
// [B, P], else 1 (every sequence turned alike).
int64_t position_sequences(const KernelArgs& args) {
  return args.in.size() > 1 && args.in_types[1].rank() == 2 ? args.in_types[1].shape[0] : 1;
}

// The position of row p along the positions' axis: p itself, or the p-th
// of the positions operand (flat over its sequences).
int64_t position_at(const KernelArgs& args, int64_t p) {
  if (args.in.size() < 2) return p;
  if (args.in_types[1].dtype == DType::i64) return static_cast<const int64_t*>(args.in[1])[p];
  return static_cast<const int32_t*>(args.in[1])[p];
}

// Each position's cosines and sines, [sequences][positions][cos of each
// pair, then sin], computed in double and rounded once to T, so every angle's values
// are the correctly rounded ones whatever the position (an angle of 4000
// radians in float would be off by 2e-4). Without a positions operand every
// call of one shape turns by the same angles (each layer's q and k, forward
// and backward): the calling thread keeps the last table and reuses it.
template <class T>
const T* angle_table(const KernelArgs& args, const RopeLayout& l, double theta) {
  struct Key {
    double theta = 0;
    int64_t positions = -1, features = -1;
    bool operator==(const Key&) const = default;
  };
  thread_local Key kept_key;
  thread_local std::vector<T> kept;
  const bool given = args.in.size() > 1;
  const Key key{theta, l.positions, l.features};
  if (!given && kept_key == key) return kept.data();

  const int64_t half = l.features / 2;
  std::vector<double> frequency(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) frequency[static_cast<size_t>(i)] = rope_frequency(theta, i, l.features);
  const int64_t rows = position_sequences(args) * l.positions;
  const size_t size = 2 * static_cast<size_t>(rows * half);
  T* table = nullptr;
  if (given) {
    table = static_cast<T*>(scratch(sizeof(T) * size));
  } else {
    kept_key = Key{};  // not valid until filled
    kept.resize(size);
    table = kept.data();
  }
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / (16 * half)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const auto position = static_cast<double>(position_at(args, p));
      T* row = table + 2 * p * half;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = position * frequency[static_cast<size_t>(i)];
        row[i] = static_cast<T>(std::cos(angle));
        row[half + i] = static_cast<T>(std::sin(angle));
      }
    }
  });
  if (!given) kept_key = key;
  return table;
}

// Rows of [outer, positions, rows], each turned by its position's angles
// (backwards under kInverse: the sines negated, which is exact); the outer
// rows split evenly over the table's `sequences`. Each pair is read before it
// is written, so x and y may be one buffer.
template <class T, bool kInverse>
void turn_rows(const T* x, T* y, const T* table, const RopeLayout& l, int64_t sequences) {
  const int64_t half = l.features / 2, rows = l.outer * l.positions * l.rows;
  const int64_t outer_per_sequence = l.outer / sequences;
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / l.features), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t sequence = r / (l.positions * l.rows) / outer_per_sequence;
      const T* cos_row = table + 2 * (sequence * l.positions + r / l.rows % l.positions) * half;
      const T* sin_row = cos_row + half;
      const T* xr = x + r * l.features;
      T* yr = y + r * l.features;
      for (int64_t i = 0; i < half; ++i) {
        const T a = xr[i], b = xr[half + i], c = cos_row[i], s = kInverse ? -sin_row[i] : sin_row[i];
        yr[i] = a * c - b * s;
        yr[half + i] = b * c + a * s;
      }
    }
  });
}

template <class T>
void rope(const KernelArgs& args) {
  const RopeLayout l = rope_layout(args.attrs, args.in_types[0]);
  if (l.outer * l.positions * l.rows * l.features == 0) return;
  const T* table = angle_table<T>(args, l, rope_theta(args.attrs));
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const int64_t sequences = position_sequences(args);
  if (args.attrs.get_bool("inverse", false))
    turn_rows<T, true>(x, y, table, l, sequences);
  else
    turn_rows<T, false>(x, y, table, l, sequences);
}

}  // namespace

void add_rotary_kernels(KernelTable& table) { table.set_float(OpKind::rope, rope<float>, rope<double>); }

}  // namespace pf::cpu
