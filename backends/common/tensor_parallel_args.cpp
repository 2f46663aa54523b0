#include "backends/common/tensor_parallel_args.h"

#include <fmt/format.h>

#include "ir/diagnostic.h"

namespace pf::backend {

TensorParallelGroup& group_of(const KernelArgs& args, OpKind kind) {
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

}  // namespace pf::backend
