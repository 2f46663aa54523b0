// What the kernels of the tp_ ops read from their arguments on every
// backend: the group they run in, and the part of the tokens that the
// sequence-parallel ops' rank holds.
#pragma once

#include "backends/common/kernel_args.h"
#include "ir/param_piece.h"

namespace pf::backend {

/// The group an op of `kind` runs in; throws a pf::Error naming the op where
/// the function runs on no rank of a tensor-parallel stage.
TensorParallelGroup& group_of(const KernelArgs& args, OpKind kind);

/// The rank's part of `whole` (the op's whole operand or result) along the
/// op's axis, as the op's attributes name it: rank `rank` of `ranks` holds
/// [part_begin(rank), part_begin(rank + 1)) of `size`. Throws where the
/// group the kernel runs in is not the one the op was compiled for.
ParamPiece token_part(const KernelArgs& args, OpKind kind, const TensorType& whole);

}  // namespace pf::backend
