// Megatron-LM's tensor-parallel split of a graph: which products run
// column- or row-parallel over the ranks of a group, and how each rank holds
// every value. The tensor-parallel pass rewrites a rank's program from it and
// the cost model prices one rank by it, so what is priced is what runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/module.h"
#include "ir/param_piece.h"  // part_begin, token_axis

namespace pf {

/// How each rank of a group holds a value: whole (axis -1), or a share of
/// `axis`: along it the value falls into `segments` equal blocks, each cut
/// into `degree` parts, and rank r holds part r of every block. A fused q, k,
/// v projection's output (3 blocks) so keeps each rank's heads of q, of k and
/// of v. One block may cut unevenly (part_begin: a vocabulary of 50257 over
/// 2 ranks holds 25128 and 25129 classes); several cut evenly. For a
/// parameter, the block of the whole each rank declares.
struct ShardLayout {
  int axis = -1;
  int64_t segments = 1;

  bool sharded() const { return axis >= 0; }
  bool operator==(const ShardLayout&) const = default;
};

enum class ShardRole : uint8_t {
  whole,    // every rank runs it on whole values
  column,   // a product by a weight's columns: whole input, output sharded on its last axis
  row,      // a product by a weight's rows: input sharded on its last axis, a partial sum of the output
  sharded,  // runs on every rank's shares
  tokens,   // runs on every rank's part of the tokens (sequence parallelism)
  experts,  // routes the tokens to the rank's block of the experts only (moe_route), from whole logits
};

/// A product (or a table lookup) that the split could have cut but keeps
/// whole on every rank, and why: what a user reads to see what stops it.
struct KeptWhole {
  int op;
  std::string why;  // e.g. "%w is tied to a stage that cuts it otherwise"
};

struct TensorParallelLayout {
  int degree = 1;
  std::vector<ShardLayout> values;  // per value
  std::vector<ShardRole> ops;       // per op
  std::vector<KeptWhole> kept_whole;  // in op order
  /// Per value, under sequence parallelism: each rank holds its part of the
  /// tokens, the axis before the last (token_axis), cut as part_begin.
  std::vector<bool> tokens;
};


/// Sequence parallelism over `layout` (tensor_parallel_layout's split of
/// `graph`): fills layout.tokens, and marks the ops that run on the ranks'
/// parts ShardRole::tokens. What `hand_offs_in_parts` names arrives or
/// leaves in parts.
void split_tokens(const Function& graph, TensorParallelLayout& layout,
                  const std::vector<std::string>& hand_offs_in_parts);

/// The split of `graph` (inlined, shapes in numbers) over `degree` ranks.
/// Its first `whole_results` results (all when negative) leave it whole:
/// what a stage sends and its loss. The rest may be shares: the stash that
/// autodiff returned for the stage's own backward. The parameters named in
/// `whole_params` stay whole, and so do the regions that would cut them (a
/// weight tied to another stage's copy, whose gradients the two stages sum).
///
/// A product by a 2-D parameter is column-parallel when its input is whole
/// and row-parallel when the input is sharded along the contracted axis;
/// between the two, elementwise ops, softmax and norms over another axis,
/// reshapes, transposes, splits, reductions and attention run on the ranks'
/// shares (a bias of the columns is cut like them). A column-parallel
/// product is kept only when everything its output reaches can run so until
/// row-parallel products make it whole again: a share that would reach an
/// op that needs the whole value (a loss, a norm over the sharded axis, the
/// graph's results), a shape that does not divide, or a parameter that some
/// other op reads whole leaves that region whole on every rank. In a GPT
/// block that is Megatron's split: the QKV projection by columns (each rank
/// its heads of q, k and v), attention by heads, the output projection by
/// rows; the MLP's first product by columns, its second by rows. Embedding
/// tables are cut by vocabulary rows (each rank looks up the ids it holds,
/// the lookups summed), and a vocabulary projection by columns feeds a
/// cross-entropy computed over each rank's classes. A mixture of experts is
/// cut by experts (Megatron-LM's expert parallelism with its all-gather
/// dispatcher, over the tensor-parallel group): each rank holds a block of
/// the experts' weights, routes every token only to the experts it holds,
/// and its combine's partial sums are summed over the group as a
/// row-parallel product's; the router runs whole on every rank.
///
/// With `sequence_parallel`, Megatron-LM's sequence parallelism on top: the
/// ops a row-parallel product's sum flows into before the next column-parallel
/// product (its bias, the residual add, the norm), which would otherwise run
/// on the whole activation on every rank, run on each rank's part of the
/// tokens (ShardRole::tokens). The row product's sum becomes a
/// reduce-scatter, and the column product reads its input gathered. A whole
/// value such an op reads along the tokens (the stage's input) is cut to the
/// rank's part, one broadcast over them (a norm's weights) is read whole, and
/// an op outside these regions reads a part gathered. The arguments and
/// results named in `hand_offs_in_parts` (what a stage receives from the one
/// before and sends to the next) arrive and leave as each rank's part of
/// their tokens.
TensorParallelLayout tensor_parallel_layout(const Function& graph, int degree, int whole_results = -1,
                                            const std::vector<std::string>& whole_params = {},
                                            bool sequence_parallel = false,
                                            const std::vector<std::string>& hand_offs_in_parts = {});

/// The split of `graph`'s experts alone over `degree` ranks (expert
/// parallelism over the data-parallel replicas of a stage): every route to
/// a block of the experts, and the ops over its slots, as above; every
/// other op whole. Its first `whole_results` results (all when negative)
/// leave whole.
TensorParallelLayout expert_parallel_layout(const Function& graph, int degree, int whole_results = -1);

}  // namespace pf
