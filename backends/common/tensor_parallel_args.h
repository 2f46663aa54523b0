// What the kernels of the tp_ and ep_ ops read from their arguments on every
// backend: the group they run in, and the part of the tokens that the
// sequence- and expert-parallel ops' rank holds.
#pragma once

#include <vector>

#include "backends/common/kernel_args.h"
#include "ir/param_piece.h"

namespace pf::backend {

/// The group an op of `kind` runs in (the expert-parallel group for the ep_
/// ops, else the tensor-parallel one); throws a pf::Error naming the op where
/// the function runs in no such group.
TensorParallelGroup& group_of(const KernelArgs& args, OpKind kind);

/// The rank's part of `whole` (the op's whole operand or result) along the
/// op's axis, as the op's attributes name it: rank `rank` of `ranks` holds
/// [part_begin(rank), part_begin(rank + 1)) of `size`. Throws where the
/// group the kernel runs in is not the one the op was compiled for.
ParamPiece token_part(const KernelArgs& args, OpKind kind, const TensorType& whole);

/// Every place's part of `whole` along the op's axis (`own` is one of them,
/// from token_part), and how many values each part holds, in place order:
/// what the group's all_gather and reduce_scatter move.
struct TokenParts {
  std::vector<ParamPiece> pieces;
  std::vector<TensorType> types;
  std::vector<int64_t> counts;
  /// Whether the parts lie in the whole one after the other (nothing before
  /// the axis but size-1 dimensions), so the collectives can work in place.
  bool contiguous = false;
};
TokenParts token_parts(const ParamPiece& own, const TensorType& whole, int places);

}  // namespace pf::backend
