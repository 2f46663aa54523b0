// The ops where the ranks of a tensor-parallel stage meet: tp_copy (the whole
// activation, unchanged), tp_reduce (partial products summed over the group
// through KernelArgs::group), tp_max (the group's maximum), and the
// sequence-parallel ops, which gather and reduce-scatter the tokens through
// the group's sum; and expert parallelism's gather and reduce-scatter over
// the replicas (KernelArgs::expert_group).
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include "backends/common/tensor_parallel_args.h"
#include "backends/cpu/kernel_table.h"

namespace pf::cpu {

namespace {

using backend::group_of;
using backend::token_part;

void copy_operand(const KernelArgs& args) {
  const auto bytes = static_cast<size_t>(args.out_types[0].bytes());
  if (bytes > 0 && args.out[0] != args.in[0]) std::memcpy(args.out[0], args.in[0], bytes);
}

template <class T>
std::span<T> result(const KernelArgs& args) {
  return {static_cast<T*>(args.out[0]), static_cast<size_t>(args.out_types[0].numel())};
}

void tp_copy(const KernelArgs& args) { copy_operand(args); }

template <class T>
void tp_reduce(const KernelArgs& args) {
  backend::TensorParallelGroup& group = group_of(args, OpKind::tp_reduce);
  copy_operand(args);
  group.all_reduce(result<T>(args));
}

template <class T>
void tp_max(const KernelArgs& args) {
  backend::TensorParallelGroup& group = group_of(args, OpKind::tp_max);
  copy_operand(args);
  group.all_reduce_max(result<T>(args));
}

/// The partial products summed over the group; the rank keeps its part.
/// Where the parts interleave in the whole (tokens after a batch axis), the
/// group's reduce-scatter takes them one place after the other.
template <class T, OpKind kKind>
void reduce_scatter(const KernelArgs& args) {
  const TensorType& whole = args.in_types[0];
  const ParamPiece own = token_part(args, kKind, whole);
  backend::TensorParallelGroup& group = group_of(args, kKind);
  const backend::TokenParts parts = backend::token_parts(own, whole, group.size());
  const auto* in = static_cast<const T*>(args.in[0]);
  std::vector<T> by_place;
  if (!parts.contiguous) {
    by_place.resize(static_cast<size_t>(whole.numel()));
    auto* to = reinterpret_cast<std::byte*>(by_place.data());
    for (size_t k = 0; k < parts.pieces.size(); ++k) {
      parts.pieces[k].cut(parts.types[k], reinterpret_cast<const std::byte*>(in), to, sizeof(T));
      to += parts.counts[k] * static_cast<int64_t>(sizeof(T));
    }
    in = by_place.data();
  }
  group.reduce_scatter(std::span<const T>(in, static_cast<size_t>(whole.numel())), result<T>(args), parts.counts);
}

/// Every rank's part gathered, one place after the other, and laid out in
/// the whole where the parts interleave.
template <class T, OpKind kKind>
void gather(const KernelArgs& args) {
  const TensorType& whole = args.out_types[0];
  const ParamPiece own = token_part(args, kKind, whole);
  backend::TensorParallelGroup& group = group_of(args, kKind);
  const backend::TokenParts parts = backend::token_parts(own, whole, group.size());
  const std::span<const T> part(static_cast<const T*>(args.in[0]), static_cast<size_t>(args.in_types[0].numel()));
  if (parts.contiguous) return group.all_gather(part, result<T>(args), parts.counts);
  std::vector<T> by_place(static_cast<size_t>(whole.numel()));
  group.all_gather(part, std::span<T>(by_place), parts.counts);
  const auto* from = reinterpret_cast<const std::byte*>(by_place.data());
  for (size_t k = 0; k < parts.pieces.size(); ++k) {
    parts.pieces[k].place(parts.types[k], from, static_cast<std::byte*>(args.out[0]), sizeof(T));
    from += parts.counts[k] * static_cast<int64_t>(sizeof(T));
  }
}

template <class T>
void tp_scatter(const KernelArgs& args) {
  const ParamPiece part = token_part(args, OpKind::tp_scatter, args.in_types[0]);
  part.cut(args.out_types[0], static_cast<const std::byte*>(args.in[0]), static_cast<std::byte*>(args.out[0]),
           sizeof(T));
}

}  // namespace

void add_tensor_parallel_kernels(KernelTable& table) {
  table.set_any_dtype(OpKind::tp_copy, tp_copy);
  table.set_float(OpKind::tp_reduce, tp_reduce<float>, tp_reduce<double>);
  table.set_float(OpKind::tp_max, tp_max<float>, tp_max<double>);
  table.set_float(OpKind::tp_reduce_scatter, reduce_scatter<float, OpKind::tp_reduce_scatter>,
                  reduce_scatter<double, OpKind::tp_reduce_scatter>);
  table.set_float(OpKind::tp_all_gather, gather<float, OpKind::tp_all_gather>, gather<double, OpKind::tp_all_gather>);
  table.set_float(OpKind::tp_scatter, tp_scatter<float>, tp_scatter<double>);
  table.set_float(OpKind::tp_gather, gather<float, OpKind::tp_gather>, gather<double, OpKind::tp_gather>);
  table.set_float(OpKind::ep_all_gather, gather<float, OpKind::ep_all_gather>, gather<double, OpKind::ep_all_gather>);
  table.set_float(OpKind::ep_reduce_scatter, reduce_scatter<float, OpKind::ep_reduce_scatter>,
                  reduce_scatter<double, OpKind::ep_reduce_scatter>);
}

}  // namespace pf::cpu
