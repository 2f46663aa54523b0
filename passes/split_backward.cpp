// split-backward: the backward function as an input-gradient part and a weight-gradient part.
#include "passes/split_backward.h"

#include <fmt/format.h>

#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

// Ops that cost nothing to declare again and hold no per-micro-batch data:
// the weight part repeats them instead of receiving their values.
bool repeatable(const Op& op) { return op.kind == OpKind::param || op.kind == OpKind::constant; }

// The names of the two parts of `backward`.
std::string input_part(const std::string& backward) { return backward + "_input"; }
std::string weight_part(const std::string& backward) { return backward + "_weight"; }

// Which ops the values in `wanted` need, directly or not.
std::vector<bool> needed_ops(const Function& f, const std::vector<ValueId>& wanted) {
  std::vector<bool> live_value(f.values.size(), false), live_op(f.ops.size(), false);
  for (ValueId v : wanted) live_value[v] = true;
  // Ops are in definition order: one sweep from the end finds them all.
  for (size_t i = f.ops.size(); i-- > 0;) {
    for (ValueId r : f.ops[i].results) live_op[i] = live_op[i] || live_value[r];
    if (live_op[i])
      for (ValueId v : f.ops[i].operands) live_value[v] = true;
  }
  return live_op;
}

// `f` reduced to the ops marked in `keep`, returning `returns`.
Function restrict_to(Function f, std::string name, const std::vector<bool>& keep, std::vector<ValueId> returns) {
  f.name = std::move(name);
  f.is_graph = false;
  size_t index = 0;
  std::erase_if(f.ops, [&](const Op&) { return !keep[index++]; });
  f.result_types.clear();
  for (ValueId r : returns) f.result_types.push_back(SymType::from(f.type_of(r)));
  f.returns = std::move(returns);
  compact_values(f);
  return f;
}

}  // namespace

BackwardSplit split_backward(Module& m, const GradientProgram& gradients, const DimBinding& binding) {
  const Function* found = m.find_function(gradients.backward);
  if (!found) throw Error(fmt::format("split-backward: the module has no backward function @{}", gradients.backward));
  const Function bwd = *found;  // a copy: adding functions below may move the original
  const size_t inputs = gradients.input_grads.size();
  if (inputs > bwd.returns.size())
    throw Error(fmt::format("split-backward: @{} returns {} values, fewer than its {} input gradients", bwd.name,
                            bwd.returns.size(), inputs));
  BackwardSplit split{input_part(bwd.name), weight_part(bwd.name), {}};
  for (const std::string& name : {split.input, split.weight})
    if (m.find_function(name)) throw Error(fmt::format("split-backward: @{} exists already", name), bwd.loc);

  const std::vector<ValueId> input_returns(bwd.returns.begin(), bwd.returns.begin() + static_cast<long>(inputs));
  const std::vector<ValueId> weight_returns(bwd.returns.begin() + static_cast<long>(inputs), bwd.returns.end());
  const std::vector<bool> in_input = needed_ops(bwd, input_returns);

  // The weight part: what the parameter gradients need, found the same way,
  // except that a value the input part computes is received (deferred) rather
  // than recomputed, so the search stops there.
  std::vector<bool> in_weight(bwd.ops.size(), false), wanted(bwd.values.size(), false), is_deferred = wanted;
  for (ValueId r : weight_returns) wanted[r] = true;
  for (size_t i = bwd.ops.size(); i-- > 0;) {
    const Op& op = bwd.ops[i];
    bool live = false;
    for (ValueId r : op.results) live = live || wanted[r];
    if (!live) continue;
    if (in_input[i] && !repeatable(op)) {
      for (ValueId r : op.results) is_deferred[r] = wanted[r];
      continue;
    }
    in_weight[i] = true;
    for (ValueId v : op.operands) wanted[v] = true;
  }
  std::vector<ValueId> deferred;
  for (size_t v = 0; v < bwd.values.size(); ++v)
    if (is_deferred[v]) deferred.push_back(static_cast<ValueId>(v));

  std::vector<ValueId> input_results = input_returns;
  input_results.insert(input_results.end(), deferred.begin(), deferred.end());
  Function input_part = restrict_to(bwd, split.input, in_input, input_results);

  Function weight_source = bwd;
  for (ValueId v : deferred) {
    weight_source.args.push_back(v);
    weight_source.arg_types.push_back(SymType::from(bwd.type_of(v)));
    split.deferred.push_back(bwd.values[v].name);
  }
  Function weight_part = restrict_to(std::move(weight_source), split.weight, in_weight, weight_returns);

  m.functions.push_back(std::move(input_part));
  m.functions.push_back(std::move(weight_part));
  verify_module(m, binding);
  return split;
}

namespace {

class SplitBackwardPass final : public Pass {
 public:
  std::string_view name() const override { return "split-backward"; }
  std::string_view summary() const override {
    return "split @<graph>.backward into @<graph>.backward_input (the input gradients) and "
           "@<graph>.backward_weight (the parameter gradients), as zero-bubble schedules run them";
  }
  bool run(Module& m, PassContext& ctx) override {
    GradientProgram gradients;
    gradients.backward = m.graph().name + ".backward";
    if (!m.find_function(gradients.backward))
      throw Error(fmt::format("split-backward: @{} has no backward function; run autodiff first", m.graph().name),
                  m.graph().loc);
    gradients.input_grads = ctx.wrt_inputs;
    const std::string input = input_part(gradients.backward), weight = weight_part(gradients.backward);
    if (!m.find_function(input) && !m.find_function(weight)) {
      ctx.split = split_backward(m, gradients, ctx.binding);
      return true;
    }
    // Split before: nothing changes if splitting the backward again gives
    // the same two parts; other parts (other input gradients, or one part
    // missing) are an error.
    Module unsplit = m;
    std::erase_if(unsplit.functions, [&](const Function& f) { return f.name == input || f.name == weight; });
    ctx.split = split_backward(unsplit, gradients, ctx.binding);
    if (print_module(unsplit) != print_module(m))
      throw Error(fmt::format("split-backward: @{} or @{} exists already, and not as this split makes it", input, weight),
                  m.find_function(gradients.backward)->loc);
    return false;
  }
};

}  // namespace

std::unique_ptr<Pass> make_split_backward_pass() { return std::make_unique<SplitBackwardPass>(); }

}  // namespace pf
