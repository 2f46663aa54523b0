// Splitting one product between two pipeline stages. Cuts between ops leave
// a stage a whole matmul heavier than its neighbour when the model has few,
// large layers (an MLP of 4096-wide layers on two stages runs 12 % apart at
// best); splitting the weight's rows lets a boundary fall inside the
// product:
//
//   %y = matmul %x, %w          %y.in_a, %y.in_b = split %x axis=-1 sizes=[k, K - k]
//                        ==>    %y.part_a = matmul %y.in_a, %w_rows0_k        (rows [0, k) of %w)
//                               %y.part_b = matmul %y.in_b, %w_rowsk_K        (rows [k, K))
//                               %y = add %y.part_a, %y.part_b
//
// The pieces are parameters of their own (ParamPiece), initialised, saved
// and loaded as rows of %w. What crosses the boundary is the first part's
// sum and the second part's slice of %x (k = K - 256: 1/16 of %x), and
// their gradients back.
#pragma once

#include <cstdint>
#include <optional>

#include "ir/module.h"
#include "partitioner/cost_graph.h"
#include "partitioner/stage_search.h"

namespace pf {

/// Rewrites the product of op `index` of `f` (a matmul of an activation by
/// a 2-D parameter of K rows that nothing else reads, without transposes)
/// as above, with `rows` = k (0 < k < K). Returns false, leaving `f` as it
/// was, when the op is not such a product or a name it would add is taken.
bool split_product_rows(Function& f, int index, int64_t rows);

/// A product to split and where.
struct ProductSplit {
  int op = -1;       // the matmul
  int64_t rows = 0;  // rows of its weight in the first piece
};

/// Where splitting one product would best even out the slowest stage of
/// `chosen` (a partition of `cg`, built from `f`) with a neighbour: the
/// last splittable product of that stage when the next stage is lighter
/// (its tail rows move on), or its first when the previous one is (its head
/// rows move back), rows rounded to multiples of a granule (32 rows, or
/// 1/16 of a smaller weight's: GEMM kernels block their inner dimension):
/// one proposal per side that could help, none when no product borders the
/// slowest stage or the share to move is under a granule.
std::vector<ProductSplit> propose_product_splits(const Function& f, const CostGraph& cg,
                                                 const PartitionResult& chosen);

}  // namespace pf
