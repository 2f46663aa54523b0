// Finds the bias adds that the CPU executor folds into the GEMMs that feed them.
#include "backends/cpu/fusion.h"

#include <algorithm>

#include "ir/verifier.h"

namespace pf::cpu {

std::vector<BiasFusion> find_bias_fusions(const Function& f, std::span<const ValueId> alias_of) {
  std::vector<int> uses(f.values.size(), 0);
  for (const Op& op : f.ops)
    for (ValueId u : op.operands) ++uses[u];
  for (ValueId r : f.returns) uses[r] += 2;  // a returned product is read by the caller too

  std::vector<BiasFusion> out;
  for (size_t i = 0; i < f.ops.size(); ++i) {
    const Op& add = f.ops[i];
    if (add.kind != OpKind::add || add.operands.size() != 2) continue;
    for (int side = 0; side < 2; ++side) {
      const ValueId mm = add.operands[side], bias = add.operands[1 - side];
      const int def = f.values[mm].def_op;
      if (def < 0 || f.ops[def].kind != OpKind::matmul || uses[mm] != 1) continue;
      const ValueId y = add.results.at(0);
      const TensorType &mm_type = f.type_of(mm), &bias_type = f.type_of(bias);
      if (!alias_of.empty() && (alias_of[mm] >= 0 || alias_of[y] >= 0)) continue;
      if (!(f.type_of(y) == mm_type) || !is_float(mm_type.dtype) || bias_type.dtype != mm_type.dtype) continue;
      if (bias_type.rank() != 1 || mm_type.rank() < 2 || bias_type.shape[0] != mm_type.shape.back()) continue;
      if (f.values[bias].def_op >= def) continue;  // the GEMM runs where the matmul was
      out.push_back({def, static_cast<int>(i), bias});
      break;
    }
  }
  return out;
}

namespace {

// Multiply-adds of a matmul: every result element sums K products.
int64_t matmul_work(const Function& f, const Op& op, const DimBinding& binding) {
  const TensorType& a = f.type_of(op.operands.at(0));
  const bool ta = evaluate_attrs(op, binding).get_bool("transpose_a", false);
  return f.type_of(op.results.at(0)).numel() * a.shape[a.rank() - (ta ? 2 : 1)];
}

}  // namespace

std::vector<GemmPair> find_gemm_pairs(const Function& f, const DimBinding& binding, std::span<const ValueId> root,
                                      std::span<const BiasFusion> fusions) {
  constexpr int64_t kMinWork = int64_t{1} << 22;
  constexpr double kMaxImbalance = 1.5;
  std::vector<bool> fused(f.ops.size(), false);
  for (const BiasFusion& b : fusions) fused[b.matmul] = true;
  auto runs_no_kernel = [&](const Op& op) {
    const ValueId r = op.results.at(0);
    return op.kind == OpKind::reshape && root[r] != r;
  };
  auto pairable = [&](int i) { return f.ops[i].kind == OpKind::matmul && !fused[i]; };

  std::vector<GemmPair> out;
  const int n = static_cast<int>(f.ops.size());
  for (int i = 0; i < n; ++i) {
    if (!pairable(i)) continue;
    int j = i + 1;
    while (j < n && runs_no_kernel(f.ops[j])) ++j;
    if (j == n || !pairable(j)) continue;
    const ValueId made = root[f.ops[i].results.at(0)];
    if (std::any_of(f.ops[j].operands.begin(), f.ops[j].operands.end(), [&](ValueId u) { return root[u] == made; }))
      continue;
    const auto wi = static_cast<double>(matmul_work(f, f.ops[i], binding));
    const auto wj = static_cast<double>(matmul_work(f, f.ops[j], binding));
    if (std::min(wi, wj) < kMinWork || std::max(wi, wj) > kMaxImbalance * std::min(wi, wj)) continue;
    out.push_back({i, j});
    i = j;
  }
  return out;
}

std::vector<int> run_times(const Function& f, std::span<const GemmPair> pairs) {
  std::vector<int> time(f.ops.size());
  for (size_t i = 0; i < time.size(); ++i) time[i] = static_cast<int>(i);
  for (const GemmPair& p : pairs)
    for (int k = p.first + 1; k <= p.second; ++k) time[k] = p.first;
  return time;
}

}  // namespace pf::cpu
