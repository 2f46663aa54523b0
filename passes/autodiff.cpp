// Reverse-mode differentiation: walks the graph's ops backwards and emits,
// through each op's gradient rule, a backward function. Forward values that
// the backward needs become explicit: the graph returns them (the stash a
// pipeline stage keeps per micro-batch) and the backward takes them as
// arguments. Parameters are re-declared in the backward, not stashed, and
// source ops (constants, masks) are recomputed there; with Recompute::layers
// so is everything a layer computes that does not leave it, with
// Recompute::selective all of that but the products' results. A
// sequence-parallel all-gather is always done again from the rank's part.
#include "passes/autodiff.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/grad_context.h"
#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

/// Builds the backward function while the rules run.
class BackwardBuilder {
 public:
  BackwardBuilder(const Function& forward, Function& backward, const DimBinding& binding, DType float_dtype,
                  Recompute recompute)
      : fwd_(forward), bwd_(backward), binding_(binding), float_dtype_(float_dtype), fresh_names_(forward) {
    if (recompute != Recompute::none)
      recomputable_ = recomputable_within_layers(forward, /*products=*/recompute == Recompute::layers);
  }

  std::string fresh_name(const std::string& base) { return fresh_names_(base); }

  ValueId add_arg(const std::string& name, const TensorType& type) {
    ValueId id = bwd_.add_value(name);
    bwd_.values[id].type = type;
    bwd_.args.push_back(id);
    bwd_.arg_types.push_back(SymType::from(type));
    return id;
  }

  /// `declared` is the result type of a source op (a constant), which no
  /// operand determines.
  std::vector<ValueId> emit(OpKind kind, std::vector<ValueId> operands, std::vector<NamedAttr> attrs,
                            const std::string& op_layer, const std::string& name_hint,
                            std::vector<TensorType> declared = {}) {
    Op op;
    op.kind = kind;
    op.operands = std::move(operands);
    op.attrs = std::move(attrs);
    if (!op_layer.empty()) op.set_attr("layer", Attr::of_string(op_layer));
    std::vector<TensorType> in;
    for (ValueId v : op.operands) in.push_back(*bwd_.values[v].type);
    OpAttrs evaluated = evaluate_attrs(op, binding_);
    std::vector<TensorType> out;
    try {
      out = op_info(kind).shape(ShapeContext{op_name(kind), in, evaluated, declared});
    } catch (const Error& e) {
      // A rule that builds an ill-typed op is a bug in the rule, not in the model.
      throw std::logic_error(fmt::format("autodiff built an ill-typed {}: {}", op_name(kind), e.message()));
    }
    int index = static_cast<int>(bwd_.ops.size());
    for (size_t i = 0; i < out.size(); ++i) {
      ValueId id = bwd_.add_value(fresh_name(out.size() == 1 ? name_hint : name_hint + "." + std::to_string(i)));
      bwd_.values[id].type = out[i];
      bwd_.values[id].def_op = index;
      op.results.push_back(id);
      op.declared.push_back(SymType::from(out[i]));
    }
    bwd_.ops.push_back(std::move(op));
    return bwd_.ops.back().results;
  }

  /// The backward function's copy of forward value `v`.
  ValueId import(ValueId v) {
    auto it = imported_.find(v);
    if (it != imported_.end()) return it->second;
    const Value& value = fwd_.values[v];
    ValueId id;
    const Op* def = value.def_op >= 0 ? &fwd_.ops[value.def_op] : nullptr;
    if (def && def->operands.empty() && def->results.size() == 1 && def->kind != OpKind::call) {
      // Parameters are the same buffers in both programs; constants and masks
      // cost less to recompute than to keep per micro-batch.
      Op copy = *def;
      copy.erase_attr("flops");
      copy.erase_attr("bytes");
      id = bwd_.add_value(value.name, value.loc);
      bwd_.values[id].type = value.type;
      bwd_.values[id].def_op = static_cast<int>(bwd_.ops.size());
      copy.results = {id};
      if (copy.declared.empty()) copy.declared.push_back(SymType::from(*value.type));
      bwd_.ops.push_back(std::move(copy));
    } else if (def && ((!recomputable_.empty() && recomputable_[static_cast<size_t>(v)]) ||
                       def->kind == OpKind::tp_all_gather)) {
      // A gathered input of a sequence-parallel group's column products is
      // gathered again rather than kept whole: the rank keeps its part.
      id = recompute(*def, v);
    } else {
      id = add_stash(v);
    }
    imported_[v] = id;
    return id;
  }

  /// Emits a copy of `def` (which defines `v`) on imported operands, so that
  /// a layer's chain is computed again back to what it stashed, where its
  /// backward first reads it.
  ValueId recompute(const Op& def, ValueId v) {
    Op copy = def;
    copy.erase_attr("flops");
    copy.erase_attr("bytes");
    for (ValueId& operand : copy.operands) operand = import(operand);
    const int index = static_cast<int>(bwd_.ops.size());
    copy.results.clear();
    for (ValueId r : def.results) {
      // A sibling result the backward already took from the stash keeps it;
      // the copy computed here beside it goes unread, under a name of its own.
      const bool stashed = imported_.count(r) > 0;
      const std::string& name = fwd_.values[r].name;
      const ValueId id = bwd_.add_value(stashed ? fresh_name(name + ".again") : name, fwd_.values[r].loc);
      bwd_.values[id].type = fwd_.values[r].type;
      bwd_.values[id].def_op = index;
      copy.results.push_back(id);
      if (!stashed) {
        imported_.emplace(r, id);
        recomputed_.push_back(r);
      }
    }
    bwd_.ops.push_back(std::move(copy));
    return imported_.at(v);
  }

  /// Per forward value, whether Recompute::layers (or, without `products`,
  /// selective) computes it again: defined by an op of a named layer that
  /// draws no random numbers (and is not a product), read only by ops of
  /// that layer, and not a result of the graph.
  static std::vector<bool> recomputable_within_layers(const Function& f, bool products) {
    std::vector<bool> out(f.values.size(), false);
    for (const Op& op : f.ops) {
      if (op.layer().empty() || op.kind == OpKind::dropout) continue;
      if (!products && (op.kind == OpKind::matmul || op.kind == OpKind::attention || op.kind == OpKind::conv2d))
        continue;
      for (ValueId r : op.results) out[static_cast<size_t>(r)] = true;
    }
    for (const Op& op : f.ops)
      for (ValueId u : op.operands) {
        const int def = f.values[u].def_op;
        if (def >= 0 && f.ops[def].layer() != op.layer()) out[static_cast<size_t>(u)] = false;
      }
    for (ValueId r : f.returns) out[static_cast<size_t>(r)] = false;
    return out;
  }

  ValueId add_stash(ValueId v) {
    ValueId id = bwd_.add_value(fwd_.values[v].name, fwd_.values[v].loc);
    bwd_.values[id].type = fwd_.values[v].type;
    stash_.push_back(v);
    stash_ids_.push_back(id);
    return id;
  }

  const std::vector<ValueId>& stash() const { return stash_; }
  const std::vector<ValueId>& recomputed() const { return recomputed_; }
  const std::vector<ValueId>& stash_ids() const { return stash_ids_; }
  const TensorType& type(ValueId b) const { return *bwd_.values[b].type; }
  DType float_dtype() const { return float_dtype_; }

  // Gradients of forward values, as backward values.
  std::unordered_map<ValueId, ValueId> grads;
  std::vector<bool> needs_grad;
  std::string layer;  // of the forward op whose rule runs

 private:
  const Function& fwd_;
  Function& bwd_;
  const DimBinding& binding_;
  DType float_dtype_;
  FreshNames fresh_names_;  // the forward's names, and the backward's new ones
  std::unordered_map<ValueId, ValueId> imported_;
  std::vector<ValueId> stash_;
  std::vector<ValueId> stash_ids_;
  std::vector<bool> recomputable_;  // per forward value; empty: nothing is recomputed
  std::vector<ValueId> recomputed_;
};

// ---- GradContext ----

ValueId GradContext::grad(int i) const {
  auto it = b_.grads.find(op_.results[i]);
  return it == b_.grads.end() ? -1 : it->second;
}
bool GradContext::needs(int i) const { return b_.needs_grad[op_.operands[i]]; }
ValueId GradContext::operand(int i) { return b_.import(op_.operands[i]); }
ValueId GradContext::result(int i) { return b_.import(op_.results[i]); }
const TensorType& GradContext::type(ValueId v) const { return b_.type(v); }

ValueId GradContext::emit(OpKind kind, std::vector<ValueId> operands, std::vector<NamedAttr> attrs) {
  return emit_multi(kind, std::move(operands), std::move(attrs))[0];
}

std::vector<ValueId> GradContext::emit_multi(OpKind kind, std::vector<ValueId> operands,
                                             std::vector<NamedAttr> attrs) {
  std::string hint = fwd_.values[op_.results[0]].name + ".d" + std::string(op_name(kind));
  return b_.emit(kind, std::move(operands), std::move(attrs), b_.layer, hint);
}

ValueId GradContext::scalar(double value) {
  return b_.emit(OpKind::constant, {}, {attr_real("value", value)}, b_.layer, "c", {{b_.float_dtype(), {}}})[0];
}

void GradContext::accumulate(int i, ValueId g) {
  ValueId target = op_.operands[i];
  if (!b_.needs_grad[target]) return;
  const TensorType& want = fwd_.type_of(target);
  if (b_.type(g).shape != want.shape) g = emit(OpKind::sum_to, {g}, {attr_ints("shape", want.shape)});
  std::string name = fwd_.values[target].name + ".grad";
  auto it = b_.grads.find(target);
  if (it == b_.grads.end()) {
    b_.grads[target] = g;
  } else {
    b_.grads[target] = b_.emit(OpKind::add, {it->second, g}, {}, b_.layer, name)[0];
  }
}

std::vector<NamedAttr> GradContext::forward_attrs(std::initializer_list<std::string_view> names) const {
  std::vector<NamedAttr> out;
  for (std::string_view name : names)
    if (const Attr* a = op_.attr(name)) out.push_back({std::string(name), *a, {}});
  return out;
}

NamedAttr attr_int(std::string name, int64_t v) { return {std::move(name), Attr::of_dim(v), {}}; }
NamedAttr attr_ints(std::string name, const std::vector<int64_t>& v) {
  std::vector<DimExpr> dims(v.begin(), v.end());
  return {std::move(name), Attr::of_dims(std::move(dims)), {}};
}
NamedAttr attr_bool(std::string name, bool v) { return {std::move(name), Attr::of_bool(v), {}}; }
NamedAttr attr_real(std::string name, double v) { return {std::move(name), Attr::of_real(v), {}}; }
NamedAttr attr_dtype(std::string name, DType v) { return {std::move(name), Attr::of_dtype(v), {}}; }

// ---- the pass ----

namespace {

bool is_trainable(const Function& f, const Op& op) {
  return op.kind == OpKind::param && is_float(f.type_of(op.results[0]).dtype);
}

}  // namespace

bool has_grad_rule(OpKind kind) { return grad_rule(kind) != nullptr; }

std::string_view recompute_name(Recompute recompute) {
  switch (recompute) {
    case Recompute::none: return "none";
    case Recompute::layers: return "layers";
    case Recompute::selective: return "selective";
  }
  return "none";
}

std::optional<Recompute> parse_recompute(std::string_view name) {
  for (Recompute r : {Recompute::none, Recompute::layers, Recompute::selective})
    if (name == recompute_name(r)) return r;
  return std::nullopt;
}

GradientProgram differentiate(Module& m, const DimBinding& binding, const AutodiffOptions& options) {
  Function& fwd = m.graph();
  for (const Op& op : fwd.ops)
    if (op.kind == OpKind::call) throw Error("autodiff: calls must be inlined first (run the inline pass)", op.loc);
  verify_module(m, binding);

  GradientProgram program;
  program.backward = fwd.name + ".backward";
  program.original_results = static_cast<int>(fwd.returns.size());
  program.outputs = options.outputs;
  if (m.find_function(program.backward))
    throw Error(fmt::format("autodiff: @{} is already differentiated", fwd.name), fwd.loc);

  // Which values carry a gradient: reachable from a trainable parameter or a
  // chosen input through float values...
  std::vector<bool> from_source(fwd.values.size(), false);
  for (const std::string& name : options.wrt_inputs) {
    ValueId v = fwd.find_value(name);
    if (v < 0 || fwd.values[v].def_op >= 0)
      throw Error(fmt::format("autodiff: @{} has no argument %{}", fwd.name, name), fwd.loc);
    from_source[v] = is_float(fwd.type_of(v).dtype);
  }
  for (const Op& op : fwd.ops) {
    bool active = is_trainable(fwd, op);
    if (has_grad_rule(op.kind))
      for (ValueId v : op.operands) active = active || from_source[v];
    for (ValueId r : op.results) from_source[r] = active && is_float(fwd.type_of(r).dtype);
  }
  // ...and from which a differentiated output is reachable.
  std::vector<bool> to_output(fwd.values.size(), false);
  for (int out : options.outputs) {
    if (out < 0 || out >= static_cast<int>(fwd.returns.size()))
      throw Error(fmt::format("autodiff: @{} has no result {}", fwd.name, out), fwd.loc);
    to_output[fwd.returns[out]] = true;
  }
  for (size_t i = fwd.ops.size(); i-- > 0;) {
    const Op& op = fwd.ops[i];
    bool reaches = false;
    for (ValueId r : op.results) reaches = reaches || to_output[r];
    if (reaches)
      for (ValueId v : op.operands) to_output[v] = true;
  }

  Function bwd;
  bwd.name = program.backward;
  bwd.loc = fwd.loc;
  DType float_dtype = DType::f32;
  if (!options.outputs.empty()) float_dtype = fwd.type_of(fwd.returns[options.outputs[0]]).dtype;
  BackwardBuilder b(fwd, bwd, binding, float_dtype, options.recompute);
  b.needs_grad.resize(fwd.values.size());
  for (size_t v = 0; v < fwd.values.size(); ++v) b.needs_grad[v] = from_source[v] && to_output[v];

  // Seeds: the incoming gradient of each differentiated output.
  for (int out : options.outputs) {
    ValueId v = fwd.returns[out];
    std::string name = b.fresh_name(fwd.values[v].name + ".grad");
    ValueId seed = b.add_arg(name, fwd.type_of(v));
    program.seeds.push_back(name);
    if (b.needs_grad[v]) {
      auto it = b.grads.find(v);
      b.grads[v] = it == b.grads.end() ? seed : b.emit(OpKind::add, {it->second, seed}, {}, "", name + ".sum")[0];
    }
  }

  for (size_t i = fwd.ops.size(); i-- > 0;) {
    const Op& op = fwd.ops[i];
    bool has_grad = false, wants_grad = false;
    for (ValueId r : op.results) has_grad = has_grad || b.grads.count(r);
    for (ValueId v : op.operands) wants_grad = wants_grad || b.needs_grad[v];
    if (!has_grad || !wants_grad) continue;
    GradRule rule = grad_rule(op.kind);
    if (!rule) throw Error(fmt::format("autodiff: {} has no gradient rule", op_name(op.kind)), op.loc);
    OpAttrs attrs = evaluate_attrs(op, binding);
    b.layer = op.layer();
    GradContext ctx(b, fwd, op, attrs);
    rule(ctx);
  }

  // Results: gradients of the chosen inputs, then of every parameter. A
  // parameter the outputs do not depend on gets zeros.
  std::unordered_set<ValueId> renamed;
  auto result_for = [&](ValueId v) {
    auto it = b.grads.find(v);
    ValueId g;
    if (it != b.grads.end()) {
      g = it->second;
    } else {
      ValueId zero = b.emit(OpKind::constant, {}, {attr_real("value", 0)}, "", "zero", {{float_dtype, {}}})[0];
      g = b.emit(OpKind::broadcast_to, {zero}, {attr_ints("shape", fwd.type_of(v).shape)}, "",
                 fwd.values[v].name + ".grad")[0];
    }
    // Name the gradient after its parameter or input where it is a fresh value.
    Value& value = bwd.values[g];
    std::string want = fwd.values[v].name + ".grad";
    if (value.def_op >= 0 && !renamed.count(g) && value.name != want) value.name = b.fresh_name(want);
    renamed.insert(g);
    bwd.returns.push_back(g);
    bwd.result_types.push_back(SymType::from(fwd.type_of(v)));
  };
  for (const std::string& name : options.wrt_inputs) {
    result_for(fwd.find_value(name));
    program.input_grads.push_back(name);
  }
  for (const Op& op : fwd.ops) {
    if (!is_trainable(fwd, op)) continue;
    result_for(op.results[0]);
    program.params.push_back(fwd.values[op.results[0]].name);
  }

  // The stash: forward values the backward reads, returned by the graph and
  // taken by the backward after the seeds (in the order the rules asked).
  for (size_t i = 0; i < b.stash().size(); ++i) {
    ValueId v = b.stash()[i];
    fwd.returns.push_back(v);
    fwd.result_types.push_back(SymType::from(fwd.type_of(v)));
    bwd.args.push_back(b.stash_ids()[i]);
    bwd.arg_types.push_back(SymType::from(fwd.type_of(v)));
    program.stash.push_back(fwd.values[v].name);
  }
  for (ValueId v : b.recomputed()) program.recomputed.push_back(fwd.values[v].name);
  m.functions.push_back(std::move(bwd));
  verify_module(m, binding);
  return program;
}

namespace {

// A module differentiated before is left as it is when differentiating it
// again would give it back: its graph without the stash and without the
// backward is differentiated anew and the two compared. Anything else (other
// results, inputs or dimensions) is an error, as differentiating twice is.
GradientProgram differentiated_already(const Module& m, const DimBinding& binding, const AutodiffOptions& options) {
  const Function& fwd = m.graph();
  const std::string backward = fwd.name + ".backward";
  const Error otherwise(
      fmt::format("autodiff: @{} is already differentiated, with other results, inputs or dimensions", fwd.name),
      fwd.loc);
  // The backward takes the seeds, then the stash the graph returns after its own results.
  const size_t args = m.find_function(backward)->args.size(), seeds = options.outputs.size();
  if (args < seeds || args - seeds > fwd.returns.size()) throw otherwise;
  Module original = m;
  auto at = std::find_if(original.functions.begin(), original.functions.end(),
                         [&](const Function& f) { return f.name == backward; }) -
            original.functions.begin();
  original.functions.erase(original.functions.begin() + at);
  Function& graph = original.graph();
  graph.returns.resize(graph.returns.size() - (args - seeds));
  graph.result_types.resize(graph.returns.size());
  GradientProgram program = differentiate(original, binding, options);
  // The new backward where the old one was: functions added after it (the
  // parts split-backward makes) compare in their places.
  std::rotate(original.functions.begin() + at, original.functions.end() - 1, original.functions.end());
  if (print_module(original) != print_module(m)) throw otherwise;
  return program;
}

class AutodiffPass final : public Pass {
 public:
  std::string_view name() const override { return "autodiff"; }
  std::string_view summary() const override {
    return "differentiate the graph's loss (a stage: the results it sends): the graph returns its stash, "
           "@<graph>.backward the gradients";
  }
  bool run(Module& m, PassContext& ctx) override {
    // A model differentiates its loss, which it must have; a stage names the results it sends.
    verify_module(m, ctx.binding, VerifyOptions{!ctx.outputs});
    // The backward is written in concrete types; make the forward concrete
    // too so that the printed module reads back under any binding.
    const bool reshaped = make_shape_pass()->run(m, ctx);
    AutodiffOptions options;
    if (ctx.outputs) options.outputs = *ctx.outputs;
    options.wrt_inputs = ctx.wrt_inputs;
    options.recompute = ctx.recompute;
    if (!reshaped && m.find_function(m.graph().name + ".backward")) {
      ctx.gradients = differentiated_already(m, ctx.binding, options);
      return false;
    }
    ctx.gradients = differentiate(m, ctx.binding, options);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_autodiff_pass() { return std::make_unique<AutodiffPass>(); }

}  // namespace pf
