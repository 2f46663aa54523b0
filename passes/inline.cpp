// inline: expands every `call` into the callee's ops. Inlined values and
// parameters take the call's scope as a prefix (`h.3.attn.qkv.w`), which makes
// parameter names stable and unique; each inlined op is tagged with the
// outermost call's scope as its `layer`, the boundary hint the partitioner
// cuts along. Functions that are no longer called are removed.
#include <algorithm>
#include <optional>

#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

class InlinePass final : public Pass {
 public:
  std::string_view name() const override { return "inline"; }
  std::string_view summary() const override { return "expand calls; tag inlined ops with the call's layer"; }

  bool run(Module& m, PassContext& ctx) override {
    bool changed = false;
    for (Function& f : m.functions) {
      unroll_repeats(m, f, ctx.binding);
      changed |= inline_calls(m, f);
    }
    if (changed) {
      std::erase_if(m.functions, [](const Function& f) { return !f.is_graph; });
    }
    return changed;
  }

 private:
  // `%y = call @block(%x) scope="h" repeat=3` becomes three chained calls with
  // scopes h.0, h.1, h.2; the intermediate values are named after the scopes.
  // A block of several values (an activation and what the layers carry
  // along, such as a sum of auxiliary losses) chains each result into the
  // operand of its place; the others are named h.0.<the callee's result>.
  static void unroll_repeats(const Module& m, Function& f, const DimBinding& binding) {
    for (size_t i = 0; i < f.ops.size(); ++i) {
      const Attr* repeat = f.ops[i].attr("repeat");
      if (f.ops[i].kind != OpKind::call || !repeat) continue;
      int64_t n = *repeat->dim.evaluate(binding);  // verified: >= 1
      Op call = f.ops[i];
      call.erase_attr("repeat");
      std::string scope = call.attr("scope")->string;
      const Function* callee = m.find_function(call.callee);
      std::vector<Op> chain;
      std::vector<ValueId> inputs = call.operands;
      for (int64_t k = 0; k < n; ++k) {
        Op step = call;
        step.operands = inputs;
        const std::string name = scope + "." + std::to_string(k);
        step.set_attr("scope", Attr::of_string(name));
        if (k + 1 < n) {
          for (size_t r = 0; r < call.results.size(); ++r) {
            const std::string carried = callee->values[callee->returns[r]].name;
            ValueId out = f.add_value(r == 0 ? name : name + "." + carried, call.loc);
            f.values[out].type = f.values[call.results[r]].type;
            step.results[r] = out;
            inputs[r] = out;
          }
        }
        chain.push_back(std::move(step));
      }
      f.ops.erase(f.ops.begin() + static_cast<std::ptrdiff_t>(i));
      f.ops.insert(f.ops.begin() + static_cast<std::ptrdiff_t>(i), chain.begin(), chain.end());
      i += chain.size() - 1;
    }
    compact_values(f);
  }

  // Expands every call in `f`, and the calls in what it inlines, in one
  // pass over its ops: a model of thousands of layers inlines in linear time.
  bool inline_calls(const Module& m, Function& f) {
    if (std::none_of(f.ops.begin(), f.ops.end(), [](const Op& op) { return op.kind == OpKind::call; })) return false;
    fresh_names_.emplace(f);
    alias_.assign(f.values.size(), -1);
    std::vector<Op> ops;
    ops.reserve(f.ops.size());
    for (Op& op : f.ops) emit(m, f, std::move(op), ops);
    f.ops = std::move(ops);
    auto resolve = [&](ValueId v) {
      while (static_cast<size_t>(v) < alias_.size() && alias_[v] >= 0) v = alias_[v];
      return v;
    };
    for (Op& op : f.ops)
      for (ValueId& v : op.operands) v = resolve(v);
    for (ValueId& v : f.returns) v = resolve(v);
    compact_values(f);
    return true;
  }

  // Appends `op` to `out`, or for a call, the callee's ops (their own calls
  // expanded in turn).
  void emit(const Module& m, Function& f, Op call, std::vector<Op>& out) {
    if (call.kind != OpKind::call) {
      out.push_back(std::move(call));
      return;
    }
    const Function* callee = m.find_function(call.callee);
    if (!callee) throw Error("call: no function named @" + call.callee, call.loc);
    const Attr* scope_attr = call.attr("scope");
    std::string scope = scope_attr ? scope_attr->string : call.callee;
    std::string layer = call.layer().empty() ? scope : call.layer();

    // Values of the callee mapped to values of `f`.
    std::vector<ValueId> map(callee->values.size(), -1);
    for (size_t i = 0; i < callee->args.size(); ++i) map[callee->args[i]] = call.operands[i];

    // A returned value defined inside the callee takes the call result's name,
    // so the caller's text keeps reading naturally (`%h1` stays `%h1`).
    std::vector<int> result_for(callee->values.size(), -1);
    for (size_t i = 0; i < callee->returns.size(); ++i) {
      ValueId r = callee->returns[i];
      if (callee->values[r].def_op >= 0 && result_for[r] < 0) result_for[r] = static_cast<int>(i);
    }

    std::vector<Op> body;
    for (const Op& inner : callee->ops) {
      Op op = inner;
      for (ValueId& v : op.operands) v = map[v];
      op.results.clear();
      for (ValueId r : inner.results) {
        ValueId id;
        if (result_for[r] >= 0) {
          id = call.results[result_for[r]];
        } else {
          id = f.add_value((*fresh_names_)(scope + "." + callee->values[r].name), callee->values[r].loc);
          f.values[id].type = callee->values[r].type;
        }
        map[r] = id;
        op.results.push_back(id);
      }
      // A nested call keeps its own scope under ours; its ops end up in our layer.
      if (op.kind == OpKind::call) {
        const Attr* inner_scope = op.attr("scope");
        op.set_attr("scope", Attr::of_string(scope + "." + (inner_scope ? inner_scope->string : op.callee)));
      }
      op.set_attr("layer", Attr::of_string(layer));
      body.push_back(std::move(op));
    }
    // Results that are arguments passed straight through (or returned twice):
    // their uses read the value itself, once every op is emitted.
    alias_.resize(f.values.size(), -1);
    for (size_t i = 0; i < callee->returns.size(); ++i) {
      ValueId inner = callee->returns[i];
      if (result_for[inner] != static_cast<int>(i)) alias_[call.results[i]] = map[inner];
    }
    for (Op& op : body) emit(m, f, std::move(op), out);
  }

  std::optional<FreshNames> fresh_names_;  // of the function being inlined into
  std::vector<ValueId> alias_;             // per value: the value its uses read instead, -1: itself
};

}  // namespace

std::unique_ptr<Pass> make_inline_pass() { return std::make_unique<InlinePass>(); }

}  // namespace pf
