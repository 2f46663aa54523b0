#include "backends/common/tensor_parallel_args.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "ir/diagnostic.h"

namespace pf::backend {

namespace {

int64_t block_offset(int place, std::span<const int64_t> counts) {
  int64_t offset = 0;
  for (int k = 0; k < place; ++k) offset += counts[static_cast<size_t>(k)];
  return offset;
}

template <class T>
void gather_through_sum(TensorParallelGroup& group, std::span<const T> part, std::span<T> whole,
                        std::span<const int64_t> counts) {
  std::fill(whole.begin(), whole.end(), T(0));
  std::copy(part.begin(), part.end(), whole.begin() + block_offset(group.rank(), counts));
  group.all_reduce(whole);
}

template <class T>
void scatter_through_sum(TensorParallelGroup& group, std::span<const T> whole, std::span<T> part,
                         std::span<const int64_t> counts) {
  std::vector<T> sum(whole.begin(), whole.end());
  group.all_reduce(std::span<T>(sum));
  const int64_t offset = block_offset(group.rank(), counts);
  std::copy(sum.begin() + offset, sum.begin() + offset + static_cast<int64_t>(part.size()), part.begin());
}

}  // namespace

void TensorParallelGroup::all_gather(std::span<const float> part, std::span<float> whole,
                                     std::span<const int64_t> counts) {
  gather_through_sum(*this, part, whole, counts);
}
void TensorParallelGroup::all_gather(std::span<const double> part, std::span<double> whole,
                                     std::span<const int64_t> counts) {
  gather_through_sum(*this, part, whole, counts);
}
void TensorParallelGroup::reduce_scatter(std::span<const float> whole, std::span<float> part,
                                         std::span<const int64_t> counts) {
  scatter_through_sum(*this, whole, part, counts);
}
void TensorParallelGroup::reduce_scatter(std::span<const double> whole, std::span<double> part,
                                         std::span<const int64_t> counts) {
  scatter_through_sum(*this, whole, part, counts);
}

TensorParallelGroup& group_of(const KernelArgs& args, OpKind kind) {
  if (kind == OpKind::ep_all_gather || kind == OpKind::ep_reduce_scatter) {
    if (args.expert_group == nullptr)
      throw Error(fmt::format("{} needs the replicas of a stage that share its experts out, and this function runs "
                              "on no such replica; run it from a plan compiled with --expert-parallel",
                              op_name(kind)));
    return *args.expert_group;
  }
  if (args.group == nullptr)
    throw Error(fmt::format("{} needs the ranks of a tensor-parallel stage, and this function runs on no such rank; "
                            "run it from a plan compiled with --tensor-parallel",
                            op_name(kind)));
  return *args.group;
}

ParamPiece token_part(const KernelArgs& args, OpKind kind, const TensorType& whole) {
  const TensorParallelGroup& group = group_of(args, kind);
  const int64_t ranks = args.attrs.get_int("ranks", 1), rank = args.attrs.get_int("rank", 0);
  if (group.size() != ranks || group.rank() != rank)
    throw Error(fmt::format("{} was compiled for rank {} of {} and runs as rank {} of {}", op_name(kind), rank, ranks,
                            group.rank(), group.size()));
  int64_t axis = args.attrs.get_int("axis", 0);
  if (axis < 0) axis += whole.rank();
  const int64_t size = whole.shape.at(static_cast<size_t>(axis));
  ParamPiece part;
  part.begin = part_begin(size, ranks, rank);
  part.end = part_begin(size, ranks, rank + 1);
  part.whole_rows = size;
  part.axis = static_cast<int>(axis);
  return part;
}

TokenParts token_parts(const ParamPiece& own, const TensorType& whole, int places) {
  TokenParts parts;
  int64_t before = 1;
  for (int a = 0; a < own.axis; ++a) before *= whole.shape[static_cast<size_t>(a)];
  parts.contiguous = before == 1;
  for (int k = 0; k < places; ++k) {
    ParamPiece piece = own;
    piece.begin = part_begin(own.whole_rows, places, k);
    piece.end = part_begin(own.whole_rows, places, k + 1);
    TensorType type = whole;
    type.shape[static_cast<size_t>(own.axis)] = piece.end - piece.begin;
    parts.counts.push_back(type.numel());
    parts.pieces.push_back(piece);
    parts.types.push_back(type);
  }
  return parts;
}

}  // namespace pf::backend
