// Finds the bias adds that the CPU executor folds into the GEMMs that feed them.
#include "backends/cpu/fusion.h"

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

}  // namespace pf::cpu
