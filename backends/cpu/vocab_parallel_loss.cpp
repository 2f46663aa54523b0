// The cross-entropy of logits whose classes are shared over a tensor-parallel
// group, in the two halves that meet around the group's sum:
// cross_entropy_parts (each rank's sum of exponentials and its target logit,
// both shifted by the group's maximum of the row) and cross_entropy_total
// (the mean of log(sum) - target logit), with their gradients. Rows are
// independent: split over the device's threads, each summed in class order,
// so the split never changes a bit.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/parallel.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

/// Which classes this rank holds: offset..offset+classes of a vocabulary.
struct Classes {
  int64_t offset, classes, vocab, ignore;

  Classes(const KernelArgs& args, int64_t classes_here)
      : offset(args.attrs.get_int("offset", 0)),
        classes(classes_here),
        vocab(args.attrs.get_int("vocab", offset + classes_here)),
        ignore(args.attrs.get_int("ignore_index", -100)) {}

  /// The target's column in this rank's logits, or -1 (another rank's
  /// class, or an ignored target).
  template <class Target>
  int64_t column(std::string_view op, const Target* targets, int64_t r) const {
    const auto t = static_cast<int64_t>(targets[r]);
    if (t == ignore) return -1;
    if (t < 0 || t >= vocab)
      throw Error(fmt::format("{}: target {} at position {} is out of range [0, {})", op, t, r, vocab));
    return t >= offset && t < offset + classes ? t - offset : -1;
  }
};

int64_t row_grain(int64_t v) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(v, 1)); }

template <class T, class Target>
void parts_of(const T* logits, const T* max, const Target* targets, int64_t rows, const Classes& c, T* out) {
  for (int64_t r = 0; r < rows; ++r) c.column("cross_entropy_parts", targets, r);  // checked before any write
  parallel_for(rows, row_grain(c.classes), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = logits + r * c.classes;
      T s = 0;
      for (int64_t j = 0; j < c.classes; ++j) s += std::exp(row[j] - max[r]);
      const int64_t k = c.column("cross_entropy_parts", targets, r);
      out[2 * r] = s;
      out[2 * r + 1] = k < 0 ? T(0) : row[k] - max[r];
    }
  });
}

// g (rows, 2): dlogits = g0 * exp(logit - max) + g1 at the target's column.
template <class T, class Target>
void parts_grad_of(const T* g, const T* logits, const T* max, const Target* targets, int64_t rows, const Classes& c,
                   T* dx) {
  for (int64_t r = 0; r < rows; ++r) c.column("cross_entropy_parts_grad", targets, r);
  parallel_for(rows, row_grain(c.classes), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = logits + r * c.classes;
      T* d = dx + r * c.classes;
      for (int64_t j = 0; j < c.classes; ++j) d[j] = g[2 * r] * std::exp(row[j] - max[r]);
      const int64_t k = c.column("cross_entropy_parts_grad", targets, r);
      if (k >= 0) d[k] += g[2 * r + 1];
    }
  });
}

/// The rows whose target counts (is not ignore_index).
template <class Target>
int64_t counted_rows(const Target* targets, int64_t rows, int64_t ignore) {
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) n += static_cast<int64_t>(targets[r]) != ignore;
  return n;
}

// The mean over the counted rows in double, in row order, as cross_entropy sums.
template <class T, class Target>
T total_of(const T* parts, const Target* targets, int64_t rows, int64_t ignore) {
  const int64_t n = counted_rows(targets, rows, ignore);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r)
    if (static_cast<int64_t>(targets[r]) != ignore)
      total += std::log(static_cast<double>(parts[2 * r])) - static_cast<double>(parts[2 * r + 1]);
  return n == 0 ? T(0) : static_cast<T>(total / static_cast<double>(n));
}

template <class T, class Target>
void total_grad_of(T g, const T* parts, const Target* targets, int64_t rows, int64_t ignore, T* dparts) {
  const int64_t n = counted_rows(targets, rows, ignore);
  const T scale = n == 0 ? T(0) : static_cast<T>(static_cast<double>(g) / static_cast<double>(n));
  for (int64_t r = 0; r < rows; ++r) {
    const bool counted = static_cast<int64_t>(targets[r]) != ignore;
    dparts[2 * r] = counted ? scale / parts[2 * r] : T(0);
    dparts[2 * r + 1] = counted ? -scale : T(0);
  }
}

/// Calls f with the targets as i32 or i64.
template <class F>
void with_targets(const KernelArgs& args, size_t operand, F&& f) {
  if (args.in_types[operand].dtype == DType::i32)
    f(static_cast<const int32_t*>(args.in[operand]));
  else
    f(static_cast<const int64_t*>(args.in[operand]));
}

template <class T>
void cross_entropy_parts(const KernelArgs& args) {
  const Classes c(args, args.in_types[0].shape.back());
  const auto* logits = static_cast<const T*>(args.in[0]);
  const auto* max = static_cast<const T*>(args.in[1]);
  with_targets(args, 2, [&](const auto* targets) {
    parts_of(logits, max, targets, args.in_types[2].numel(), c, static_cast<T*>(args.out[0]));
  });
}

template <class T>
void cross_entropy_parts_grad(const KernelArgs& args) {
  const Classes c(args, args.in_types[1].shape.back());
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* logits = static_cast<const T*>(args.in[1]);
  const auto* max = static_cast<const T*>(args.in[2]);
  with_targets(args, 3, [&](const auto* targets) {
    parts_grad_of(g, logits, max, targets, args.in_types[3].numel(), c, static_cast<T*>(args.out[0]));
  });
}

template <class T>
void cross_entropy_total(const KernelArgs& args) {
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  with_targets(args, 1, [&](const auto* targets) {
    *static_cast<T*>(args.out[0]) =
        total_of(static_cast<const T*>(args.in[0]), targets, args.in_types[1].numel(), ignore);
  });
}

template <class T>
void cross_entropy_total_grad(const KernelArgs& args) {
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  const T g = *static_cast<const T*>(args.in[0]);
  with_targets(args, 2, [&](const auto* targets) {
    total_grad_of(g, static_cast<const T*>(args.in[1]), targets, args.in_types[2].numel(), ignore,
                  static_cast<T*>(args.out[0]));
  });
}

}  // namespace

void add_vocab_parallel_loss_kernels(KernelTable& table) {
  table.set_float(OpKind::cross_entropy_parts, cross_entropy_parts<float>, cross_entropy_parts<double>);
  table.set_float(OpKind::cross_entropy_total, cross_entropy_total<float>, cross_entropy_total<double>);
  table.set_float(OpKind::cross_entropy_parts_grad, cross_entropy_parts_grad<float>, cross_entropy_parts_grad<double>);
  table.set_float(OpKind::cross_entropy_total_grad, cross_entropy_total_grad<float>, cross_entropy_total_grad<double>);
}

}  // namespace pf::cpu
