// What the passes that write one rank's program of a split graph share
// (tensor-parallel over a stage's group, expert-parallel over its replicas):
// the ops where the ranks meet, a parameter cut to the rank's block, and the
// types found again once the program is rewritten.
#pragma once

#include <string_view>

#include "ir/module.h"
#include "passes/rewrite.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

/// An op of `kind` (tp_copy, tp_reduce...) from `in` to `out`, at `like`'s
/// place in the source and in its layer.
Op meeting_op(OpKind kind, ValueId in, ValueId out, const Op& like);

/// The same for an op that moves rank `rank`'s part of `size` values along
/// `axis` (a gather or a reduce-scatter over `ranks`).
Op token_share_op(OpKind kind, ValueId in, ValueId out, const Op& like, int axis, int64_t size, int rank, int ranks);

/// The rank's block of a parameter the split cuts: a piece of the whole,
/// named <name>.<tag><rank>, initialised and saved as its part of the whole.
void cut_parameter(Function& g, Op& param, const ShardLayout& layout, int degree, int rank, FreshNames& fresh_name,
                   std::string_view tag);

/// The attribute `name` of `op`, to change in place; throws where it has none.
Attr& attr_of(Op& op, std::string_view name);

/// Whether a pass writing the program of rank `rank` of `degree` (`pass`,
/// named in errors) has anything to write: not for one rank. Throws for a
/// rank outside the group (`outside` says so, given the rank and the
/// degree), and for a module that does not verify under `binding` or whose
/// graph still calls functions.
bool writes_rank_program(Module& m, const DimBinding& binding, std::string_view pass, int degree, int rank,
                         std::string_view outside);

/// Types every value again and writes the result types in, as the shape
/// pass leaves them. Sources keep what they declare (a piece its new type).
void retype(Module& m, const DimBinding& binding);

}  // namespace pf
