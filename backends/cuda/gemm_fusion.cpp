// Finds the matmul + bias add (+ gelu) chains that the CUDA executor runs as one cuBLASLt GEMM with an epilogue.
#include "backends/cuda/gemm_fusion.h"

#include <algorithm>

#include "ir/dtype.h"

namespace pf::cuda {

namespace {

bool flag(const Op& op, std::string_view name) {
  const Attr* a = op.attr(name);
  return a && a->boolean;
}

}  // namespace

std::vector<GemmEpilogue> find_gemm_epilogues(const Function& f, std::span<const SoftmaxChain> softmax_chains) {
  const std::vector<std::vector<int>> users = f.users();
  std::vector<bool> returned(f.values.size(), false);
  for (ValueId r : f.returns) returned[r] = true;
  auto only_user = [&](ValueId v) { return !returned[v] && users[v].size() == 1 ? users[v][0] : -1; };

  std::vector<GemmEpilogue> found;
  for (size_t i = 0; i < f.ops.size(); ++i) {
    const Op& mm = f.ops[i];
    if (mm.kind != OpKind::matmul || mm.operands.size() != 2 || flag(mm, "transpose_a") || flag(mm, "transpose_b"))
      continue;
    const TensorType &x = f.type_of(mm.operands[0]), &w = f.type_of(mm.operands[1]);
    const ValueId product = mm.results[0];
    const TensorType& out = f.type_of(product);
    if (!is_float(x.dtype) || w.rank() != 2 || x.rank() < 2) continue;
    const int a = only_user(product);
    if (a < 0 || f.ops[a].kind != OpKind::add) continue;
    const Op& add = f.ops[a];
    const ValueId bias = add.operands[0] == product ? add.operands[1] : add.operands[0];
    if (bias == product || f.type_of(bias) != TensorType{out.dtype, {out.shape.back()}} ||
        f.type_of(add.results[0]) != out)
      continue;
    const int bias_def = f.values[bias].def_op;
    if (bias_def >= static_cast<int>(i)) continue;  // the GEMM runs at the matmul: the bias must be there
    GemmEpilogue e{static_cast<int>(i), a, -1, bias, add.results[0], {product}};
    const int g = only_user(add.results[0]);
    if (g >= 0 && f.ops[g].kind == OpKind::gelu && f.type_of(f.ops[g].results[0]) == out) {
      e.gelu = g;
      e.intermediates.push_back(add.results[0]);
      e.result = f.ops[g].results[0];
    }
    found.push_back(std::move(e));
  }
  // Spans (matmul to last op) that overlap a softmax chain's stay unfused:
  // the executor runs each softmax chain's span as one moment.
  std::vector<GemmEpilogue> apart;
  for (GemmEpilogue& e : found) {
    const int last = std::max(e.add, e.gelu);
    const bool overlaps = std::any_of(softmax_chains.begin(), softmax_chains.end(), [&](const SoftmaxChain& c) {
      return e.matmul <= c.ops.back() && c.ops.front() <= last;
    });
    if (!overlaps) apart.push_back(std::move(e));
  }
  return apart;
}

}  // namespace pf::cuda
