// Data movement for every dtype: reshape, transpose, slice, concat, split, broadcast_to, slice_grad (bytes only).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"

namespace pf::cpu {

namespace {

size_t element_size(const TensorType& t) { return static_cast<size_t>(dtype_size(t.dtype)); }

void copy_bytes(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
}

// A reshape keeps the row-major order: one copy (the executor may alias instead).
void reshape(const KernelArgs& args) { copy_bytes(args.out[0], args.in[0], args.out_types[0].bytes()); }

// transpose(perm): result dimension d is input dimension perm[d]. The plan
// walks the result in order with the input's strides permuted (operand 0 is
// the input); dimensions that stay adjacent in both merge.
BroadcastPlan transpose_plan(const TensorType& in, const std::vector<int64_t>& perm) {
  const std::vector<int64_t> in_strides = contiguous_strides(in.shape);
  BroadcastPlan plan;
  plan.strides.resize(1);
  std::vector<int64_t>& strides = plan.strides[0];
  for (int64_t p : perm) {
    const int64_t axis = normalize_axis(p, in.rank());
    const int64_t size = in.shape[axis], stride = in_strides[axis];
    if (size == 1) continue;
    if (!plan.dims.empty() && strides.back() == stride * size) {
      plan.dims.back() *= size;
      strides.back() = stride;
    } else {
      plan.dims.push_back(size);
      strides.push_back(stride);
    }
  }
  if (plan.dims.empty()) {
    plan.dims.push_back(1);
    strides.push_back(1);
  }
  return plan;
}

// E is an unsigned integer as wide as one element: only bytes move.
template <class E>
void transpose_elements(const E* in, E* out, BroadcastPlan plan) {
  const int64_t rank = static_cast<int64_t>(plan.dims.size());
  const int64_t q = plan.dims.back(), sq = plan.strides[0].back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < plan.dims.size(); ++d) rows *= plan.dims[d];
  if (sq == 1) {
    // Rows stay contiguous ([B, T, H, D] -> [B, H, T, D]): copy them whole,
    // ranges of rows split over the device's threads.
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / q), [&](int64_t begin, int64_t end) {
      for (RowWalk w(plan, begin); w.row() < end; w.next()) std::copy_n(in + w.offset(0), q, out + w.row() * q);
    });
    return;
  }
  if (rank >= 2 && plan.strides[0][rank - 2] == 1) {
    // A batch of 2-D transposes [P, Q] <- [Q, P]: in tiles, so that both the
    // reads and the strided writes of a tile stay in cache.
    constexpr int64_t kTile = 32;
    const int64_t p = plan.dims[rank - 2];
    plan.dims.pop_back();
    plan.strides[0].pop_back();
    for (RowWalk w(plan); !w.done(); w.next()) {
      const E* src = in + w.offset(0);
      E* dst = out + w.row() * p * q;
      for (int64_t p0 = 0; p0 < p; p0 += kTile)
        for (int64_t q0 = 0; q0 < q; q0 += kTile)
          for (int64_t j = q0; j < std::min(q0 + kTile, q); ++j)
            for (int64_t i = p0; i < std::min(p0 + kTile, p); ++i) dst[i * q + j] = src[i + j * sq];
    }
    return;
  }
  for (RowWalk w(plan); !w.done(); w.next()) {
    const E* src = in + w.offset(0);
    E* dst = out + w.row() * q;
    for (int64_t j = 0; j < q; ++j) dst[j] = src[j * sq];
  }
}

void transpose(const KernelArgs& args) {
  const TensorType& t = args.in_types[0];
  if (t.numel() == 0) return;
  const BroadcastPlan plan = transpose_plan(t, args.attrs.get_ints("perm", {}));
  by_element_size(t.dtype, [&](auto e) {
    using E = decltype(e);
    transpose_elements(static_cast<const E*>(args.in[0]), static_cast<E*>(args.out[0]), plan);
  });
}

// slice(axis, start, end): per outer index one contiguous run of (end - start) * inner elements.
void slice(const KernelArgs& args) {
  const TensorType& t = args.in_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const int64_t start = args.attrs.get_int("start", 0), end = args.attrs.get_int("end", 0);
  const AxisSplit s = split_at_axis(t.shape, axis);
  const int64_t es = static_cast<int64_t>(element_size(t));
  const int64_t run = (end - start) * s.inner * es, in_block = s.n * s.inner * es;
  const auto* in = static_cast<const std::byte*>(args.in[0]) + start * s.inner * es;
  auto* out = static_cast<std::byte*>(args.out[0]);
  for (int64_t o = 0; o < s.outer; ++o) copy_bytes(out + o * run, in + o * in_block, run);
}

// concat(axis): per outer index, each operand's block in turn.
void concat(const KernelArgs& args) {
  const TensorType& t = args.out_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const AxisSplit s = split_at_axis(t.shape, axis);
  const int64_t es = static_cast<int64_t>(element_size(t));
  auto* out = static_cast<std::byte*>(args.out[0]);
  for (int64_t o = 0; o < s.outer; ++o) {
    for (size_t i = 0; i < args.in.size(); ++i) {
      const int64_t block = args.in_types[i].shape[axis] * s.inner * es;
      copy_bytes(out, static_cast<const std::byte*>(args.in[i]) + o * block, block);
      out += block;
    }
  }
}

// split(axis, sizes): the inverse of concat, one result per size.
void split(const KernelArgs& args) {
  const TensorType& t = args.in_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const AxisSplit s = split_at_axis(t.shape, axis);
  const int64_t es = static_cast<int64_t>(element_size(t));
  const auto* in = static_cast<const std::byte*>(args.in[0]);
  for (int64_t o = 0; o < s.outer; ++o) {
    for (size_t i = 0; i < args.out.size(); ++i) {
      const int64_t block = args.out_types[i].shape[axis] * s.inner * es;
      copy_bytes(static_cast<std::byte*>(args.out[i]) + o * block, in, block);
      in += block;
    }
  }
}

// broadcast_to(shape): NumPy broadcasting of the operand to `shape`. Each
// row of the plan is a copy of a run of the operand or a fill with one of its
// elements.
template <class E>
void broadcast_elements(const E* in, E* out, const BroadcastPlan& plan) {
  const int64_t n = plan.dims.back();
  const bool runs = plan.strides[0].back() != 0;
  for (RowWalk w(plan); !w.done(); w.next()) {
    E* dst = out + w.row() * n;
    if (runs)
      std::copy_n(in + w.offset(0), n, dst);
    else
      std::fill_n(dst, n, in[w.offset(0)]);
  }
}

void broadcast_to(const KernelArgs& args) {
  const TensorType& t = args.out_types[0];
  if (t.numel() == 0) return;
  const Shape* operands[] = {&args.in_types[0].shape};
  const BroadcastPlan plan = plan_broadcast(t.shape, operands);
  by_element_size(t.dtype, [&](auto e) {
    using E = decltype(e);
    broadcast_elements(static_cast<const E*>(args.in[0]), static_cast<E*>(args.out[0]), plan);
  });
}

// slice_grad(axis, start, size): the adjoint of slice, g placed at `start`
// along `axis` in zeros of size `size` there. Per outer index: zeros, g's
// run, zeros. All-zero bytes are 0 in every dtype (+0.0 for floats).
void slice_grad(const KernelArgs& args) {
  const TensorType &g = args.in_types[0], &t = args.out_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const int64_t start = args.attrs.get_int("start", 0);
  const AxisSplit s = split_at_axis(t.shape, axis);
  const int64_t es = static_cast<int64_t>(element_size(t));
  const int64_t before = start * s.inner * es, run = g.shape[axis] * s.inner * es;
  const int64_t after = s.n * s.inner * es - before - run;
  const auto* in = static_cast<const std::byte*>(args.in[0]);
  auto* out = static_cast<std::byte*>(args.out[0]);
  for (int64_t o = 0; o < s.outer; ++o) {
    if (before > 0) std::memset(out, 0, static_cast<size_t>(before));
    copy_bytes(out + before, in + o * run, run);
    if (after > 0) std::memset(out + before + run, 0, static_cast<size_t>(after));
    out += before + run + after;
  }
}

}  // namespace

void add_movement_kernels(KernelTable& table) {
  table.set_any_dtype(OpKind::reshape, reshape);
  table.set_any_dtype(OpKind::transpose, transpose);
  table.set_any_dtype(OpKind::slice, slice);
  table.set_any_dtype(OpKind::concat, concat);
  table.set_any_dtype(OpKind::split, split);
  table.set_any_dtype(OpKind::broadcast_to, broadcast_to);
  table.set_any_dtype(OpKind::slice_grad, slice_grad);
}

}  // namespace pf::cpu
