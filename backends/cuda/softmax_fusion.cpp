// Finds the scale-mask-softmax chains (and their gradients) that the CUDA executor fuses.
#include "backends/cuda/softmax_fusion.h"

#include <algorithm>

#include "ir/dtype.h"
#include "ir/op_table.h"
#include "ir/verifier.h"

namespace pf::cuda {

namespace {

class ChainFinder {
 public:
  ChainFinder(const Function& f, const DimBinding& binding)
      : f_(f), binding_(binding), users_(f.users()), producer_(f.values.size(), -1), returned_(f.values.size()) {
    for (size_t i = 0; i < f.ops.size(); ++i)
      for (ValueId r : f.ops[i].results) producer_[r] = static_cast<int>(i);
    for (ValueId r : f.returns) returned_[r] = true;
  }

  /// softmax(where(mask, x * scale, fill)) ending at op `s`.
  bool forward_at(int s, SoftmaxChain& chain) const {
    const Op& softmax = f_.ops[s];
    if (softmax.kind != OpKind::softmax || !over_last_axis(softmax)) return false;
    const ValueId masked = softmax.operands[0];
    const int w = only_private_use_producer(masked);
    if (w < 0 || f_.ops[w].kind != OpKind::where || f_.ops[w].operands.size() != 3) return false;
    const ValueId scaled = f_.ops[w].operands[1];
    if (!masking_where(f_.ops[w], scaled)) return false;
    const int m = only_private_use_producer(scaled);
    if (m < 0 || f_.ops[m].kind != OpKind::mul) return false;
    ValueId x = -1, scale = -1;
    if (!split_scaling(f_.ops[m], scaled, x, scale)) return false;
    chain.gradient = false;
    chain.ops = {m, w, s};
    chain.operands = {x, scale, f_.ops[w].operands[0], f_.ops[w].operands[2]};
    chain.result = softmax.results[0];
    chain.intermediates = {scaled, masked};
    return true;
  }

  /// where(mask, softmax_grad(g, y), fill) * scale starting at op `s`.
  bool gradient_at(int s, SoftmaxChain& chain) const {
    const Op& grad = f_.ops[s];
    if (grad.kind != OpKind::softmax_grad || !over_last_axis(grad)) return false;
    const ValueId d = grad.results[0];
    const int w = only_private_user(d);
    if (w < 0 || !masking_where(f_.ops[w], d)) return false;
    const ValueId masked = f_.ops[w].results[0];
    const int m = only_private_user(masked);
    if (m < 0 || f_.ops[m].kind != OpKind::mul) return false;
    ValueId same = -1, scale = -1;
    if (!split_scaling(f_.ops[m], masked, same, scale)) return false;
    chain.gradient = true;
    chain.ops = {s, w, m};
    chain.operands = {grad.operands[0], grad.operands[1], f_.ops[w].operands[0], f_.ops[w].operands[2], scale};
    chain.result = f_.ops[m].results[0];
    chain.intermediates = {d, masked};
    return true;
  }

 private:
  const TensorType& type(ValueId v) const { return f_.type_of(v); }
  bool scalar_float(ValueId v) const { return is_float(type(v).dtype) && type(v).numel() == 1; }
  bool private_value(ValueId v) const { return !returned_[v] && users_[v].size() == 1; }

  /// The op that computes v, when v's only reader is the chain's next op.
  int only_private_use_producer(ValueId v) const { return private_value(v) ? producer_[v] : -1; }
  /// The only op that reads v, when it is the only reader.
  int only_private_user(ValueId v) const { return private_value(v) ? users_[v][0] : -1; }

  bool over_last_axis(const Op& op) const {
    const int64_t rank = type(op.results[0]).rank();
    const int64_t axis = evaluate_attrs(op, binding_).get_int("axis", -1);
    return rank > 0 && (axis == -1 || axis == rank - 1);
  }

  /// where %mask, %v, %fill with a bool mask of v's trailing dimensions and a one-element fill.
  bool masking_where(const Op& op, ValueId v) const {
    if (op.kind != OpKind::where || op.operands.size() != 3 || op.operands[1] != v) return false;
    const ValueId mask = op.operands[0];
    if (mask == v || op.operands[2] == v || !scalar_float(op.operands[2])) return false;
    const Shape& ms = type(mask).shape;
    const Shape& vs = type(v).shape;
    return type(mask).dtype == DType::boolean && !ms.empty() && ms.size() <= vs.size() &&
           std::equal(ms.begin(), ms.end(), vs.end() - static_cast<std::ptrdiff_t>(ms.size())) &&
           type(op.results[0]).shape == vs;
  }

  /// mul of `full` (the chain's value, unbroadcast) by a one-element float, in either order.
  bool split_scaling(const Op& mul, ValueId chain_value, ValueId& full, ValueId& scale) const {
    if (mul.operands.size() != 2) return false;
    for (int k : {1, 0}) {
      const ValueId s = mul.operands[static_cast<size_t>(k)], other = mul.operands[static_cast<size_t>(1 - k)];
      if (scalar_float(s) && s != chain_value && type(other).shape == type(mul.results[0]).shape) {
        full = other;
        scale = s;
        // The forward's chain value is the product; the gradient's is the operand being scaled.
        return mul.results[0] == chain_value || other == chain_value;
      }
    }
    return false;
  }

  const Function& f_;
  const DimBinding& binding_;
  std::vector<std::vector<int>> users_;
  std::vector<int> producer_;
  std::vector<bool> returned_;
};

}  // namespace

std::vector<SoftmaxChain> find_softmax_chains(const Function& f, const DimBinding& binding) {
  ChainFinder finder(f, binding);
  std::vector<SoftmaxChain> chains;
  std::vector<bool> taken(f.ops.size(), false);
  for (size_t i = 0; i < f.ops.size(); ++i) {
    SoftmaxChain chain;
    const int op = static_cast<int>(i);
    if (!finder.forward_at(op, chain) && !finder.gradient_at(op, chain)) continue;
    if (std::any_of(chain.ops.begin(), chain.ops.end(), [&](int k) { return taken[static_cast<size_t>(k)]; }))
      continue;
    for (int k : chain.ops) taken[static_cast<size_t>(k)] = true;
    chains.push_back(std::move(chain));
  }
  // In op order; a chain whose span overlaps an earlier one's stays unfused
  // (the executor plans each span as one moment).
  std::sort(chains.begin(), chains.end(),
            [](const SoftmaxChain& a, const SoftmaxChain& b) { return a.ops.front() < b.ops.front(); });
  std::vector<SoftmaxChain> apart;
  for (SoftmaxChain& c : chains)
    if (apart.empty() || c.ops.front() > apart.back().ops.back()) apart.push_back(std::move(c));
  return apart;
}

}  // namespace pf::cuda
