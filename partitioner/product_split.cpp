// Splitting a product's weight by rows between two stages.
#include "partitioner/product_split.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "ir/param_piece.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

/// K, the rows of the weight of op `index` when it is a splittable product
/// (see split_product_rows), else 0.
int64_t product_rows(const Function& f, int index, const std::vector<std::vector<int>>& users) {
  const Op& mm = f.ops[static_cast<size_t>(index)];
  if (mm.kind != OpKind::matmul || mm.operands.size() != 2) return 0;
  for (const char* flag : {"transpose_a", "transpose_b"})
    if (const Attr* a = mm.attr(flag); a && a->boolean) return 0;
  const ValueId x = mm.operands[0], w = mm.operands[1];
  const int def = f.values[w].def_op;
  if (def < 0 || f.ops[def].kind != OpKind::param || param_piece(f.ops[def]) || x == w) return 0;
  if (users[w].size() != 1) return 0;  // a tied weight is held whole by every reader
  const TensorType& wt = f.type_of(w);
  const TensorType& xt = f.type_of(x);
  if (wt.rank() != 2 || xt.rank() < 1 || xt.shape.back() != wt.shape[0]) return 0;
  return wt.shape[0];
}

Op op_like(const Op& model, OpKind kind, std::vector<ValueId> operands, std::vector<ValueId> results) {
  Op op;
  op.kind = kind;
  op.operands = std::move(operands);
  op.results = std::move(results);
  op.loc = model.loc;
  if (const Attr* layer = model.attr("layer")) op.set_attr("layer", *layer);
  return op;
}

}  // namespace

bool split_product_rows(Function& f, int index, int64_t rows) {
  const int64_t k_total = product_rows(f, index, f.users());
  if (k_total == 0 || rows <= 0 || rows >= k_total) return false;
  const Op mm = f.ops[static_cast<size_t>(index)];
  const ValueId x = mm.operands[0], w = mm.operands[1], y = mm.results[0];
  const int param_index = f.values[w].def_op;
  const Op param = f.ops[static_cast<size_t>(param_index)];
  const std::string y_name = f.values[y].name, w_name = f.values[w].name;
  const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, rows}, {rows, k_total}};
  const std::vector<std::string> names = {y_name + ".in_a",   y_name + ".in_b",
                                          y_name + ".part_a", y_name + ".part_b",
                                          fmt::format("{}_rows{}_{}", w_name, 0, rows),
                                          fmt::format("{}_rows{}_{}", w_name, rows, k_total)};
  for (const std::string& n : names)
    if (f.find_value(n) >= 0) return false;

  std::vector<ValueId> ids;
  for (const std::string& n : names) ids.push_back(f.add_value(n, mm.loc));
  const ValueId x_a = ids[0], x_b = ids[1], y_a = ids[2], y_b = ids[3];
  const TensorType& xt = f.type_of(x);
  const TensorType& wt = f.type_of(w);
  const TensorType& yt = f.type_of(y);
  std::vector<Op> ops;
  Op split = op_like(mm, OpKind::split, {x}, {x_a, x_b});
  split.set_attr("axis", Attr::of_dim(DimExpr(static_cast<int64_t>(xt.rank()) - 1)));
  split.set_attr("sizes", Attr::of_dims({DimExpr(rows), DimExpr(k_total - rows)}));
  ops.push_back(std::move(split));
  for (int part = 0; part < 2; ++part) {
    const auto [begin, end] = ranges[static_cast<size_t>(part)];
    const ValueId piece = ids[4 + static_cast<size_t>(part)];
    TensorType piece_type = wt;
    piece_type.shape[0] = end - begin;
    TensorType in_type = xt;
    in_type.shape.back() = end - begin;
    f.values[piece].type = piece_type;
    f.values[ids[static_cast<size_t>(part)]].type = in_type;
    f.values[ids[2 + static_cast<size_t>(part)]].type = yt;
    Op p = param;
    p.results = {piece};
    p.declared = {SymType::from(piece_type)};
    set_param_piece(p, {w_name, begin, end, k_total});
    ops.push_back(std::move(p));
    const auto k = static_cast<size_t>(part);
    ops.push_back(op_like(mm, OpKind::matmul, {ids[k], piece}, {ids[2 + k]}));
  }
  Op sum = op_like(mm, OpKind::add, {y_a, y_b}, {y});
  sum.declared = mm.declared;
  ops.push_back(std::move(sum));

  // The product's place takes the new ops; the whole weight's op goes.
  std::vector<Op> rewritten;
  rewritten.reserve(f.ops.size() + ops.size());
  for (size_t i = 0; i < f.ops.size(); ++i) {
    if (static_cast<int>(i) == param_index) continue;
    if (static_cast<int>(i) == index) {
      for (Op& op : ops) rewritten.push_back(std::move(op));
      continue;
    }
    rewritten.push_back(std::move(f.ops[i]));
  }
  f.ops = std::move(rewritten);
  f.values[w].def_op = -1;
  compact_values(f);
  return true;
}

std::vector<ProductSplit> propose_product_splits(const Function& f, const CostGraph& cg,
                                                 const PartitionResult& chosen) {
  std::vector<ProductSplit> out;
  const std::vector<StagePlan>& stages = chosen.stages;
  if (stages.size() < 2) return out;
  size_t s = 0;
  for (size_t i = 1; i < stages.size(); ++i)
    if (stages[i].time_s > stages[s].time_s) s = i;
  const auto users = f.users();
  auto work = [&](int node) {
    const CostNode& n = cg.nodes[static_cast<size_t>(node)];
    return n.forward_s + n.backward_s;
  };
  const StagePlan& slow = stages[s];
  double stage_work = 0;
  for (int j = slow.begin; j < slow.end; ++j) stage_work += work(j);
  if (!(stage_work > 0)) return out;
  const double seconds_per_work = slow.compute_s / stage_work;  // the device's speed
  for (const int step : {1, -1}) {
    const int n = static_cast<int>(s) + step;
    if (n < 0 || n >= static_cast<int>(stages.size())) continue;
    const double share = (slow.time_s - stages[static_cast<size_t>(n)].time_s) / 2 / seconds_per_work;
    // The product nearest the neighbour, and the work between it and the boundary.
    double between = 0;
    int product = -1;
    int64_t k = 0;  // its weight's rows
    for (int j = step > 0 ? slow.end - 1 : slow.begin; step > 0 ? j >= slow.begin : j < slow.end; j -= step) {
      k = product_rows(f, j, users);
      if (k > 0) {
        product = j;
        break;
      }
      between += work(j);
    }
    if (product < 0 || !(work(product) > 0)) continue;
    const int64_t granule = std::clamp<int64_t>(k / 16, 1, 32);
    const double fraction = (share - between) / work(product);
    const double granules = fraction * static_cast<double>(k) / static_cast<double>(granule);
    const int64_t moved = static_cast<int64_t>(std::llround(granules)) * granule;
    if (moved < granule || moved > k - granule) continue;
    out.push_back({product, step > 0 ? k - moved : moved});
  }
  return out;
}

}  // namespace pf
