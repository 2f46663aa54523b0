// fuse-swiglu: rewrites the gate of a SwiGLU MLP (Llama's, Mixtral's experts'),
//   %act = silu %gate
//   %h = mul %act, %up      (or mul %up, %act; %up of %act's type)
// into `%h = swiglu %gate, %up`: one pass over memory instead of two, and a
// backward that reads the gate and up (which it stashes anyway) instead of
// stashing silu(gate) as well. Where the gate and up are both an expert's
// products over the slots of one route (`moe_matmul ..., %route`), the
// route goes along, `swiglu %gate, %up, %route`, so that only the slots in
// use are computed: a dropless route fills K of every E. Only a silu read
// by the mul alone (and not returned) goes.
#include <optional>

#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

class FuseSwigluPass final : public Pass {
 public:
  std::string_view name() const override { return "fuse-swiglu"; }
  std::string_view summary() const override { return "rewrite silu(gate) * up into one swiglu op"; }

  bool run(Module& m, PassContext& ctx) override {
    verify_module(m, ctx.binding);  // every value typed under the binding
    bool changed = false;
    for (Function& f : m.functions) changed |= run_on(f);
    return changed;
  }

 private:
  static bool run_on(Function& f) {
    const std::vector<std::vector<int>> users = f.users();
    std::vector<bool> returned(f.values.size(), false);
    for (ValueId r : f.returns) returned[r] = true;
    std::vector<bool> dead(f.ops.size(), false);
    bool changed = false;
    for (size_t i = 0; i < f.ops.size(); ++i) {
      Op& mul = f.ops[i];
      if (mul.kind != OpKind::mul) continue;
      for (int side = 0; side < 2; ++side) {
        const ValueId act = mul.operands[side], up = mul.operands[1 - side];
        const int silu = f.values[act].def_op;
        if (silu < 0 || dead[silu] || f.ops[silu].kind != OpKind::silu) continue;
        if (users[act].size() != 1 || returned[act] || f.type_of(up) != f.type_of(act)) continue;
        const ValueId gate = f.ops[silu].operands[0];
        Op fused;
        fused.kind = OpKind::swiglu;
        fused.operands = {gate, up};
        if (const std::optional<ValueId> route = shared_route(f, gate, up)) fused.operands.push_back(*route);
        fused.results = mul.results;
        fused.declared = mul.declared;
        fused.loc = mul.loc;
        if (const Attr* layer = mul.attr("layer")) fused.set_attr("layer", *layer);
        mul = std::move(fused);
        dead[silu] = true;
        changed = true;
        break;
      }
    }
    if (changed) erase_ops(f, dead);
    return changed;
  }

  /// The route of the slots `gate` and `up` are, when both are made by
  /// moe_matmul over the slots of one route.
  static std::optional<ValueId> shared_route(const Function& f, ValueId gate, ValueId up) {
    auto route_of = [&](ValueId v) -> std::optional<ValueId> {
      const int def = f.values[v].def_op;
      if (def < 0) return std::nullopt;
      const Op& op = f.ops[def];
      const Attr* summed = op.attr("transpose_a");  // a weight's gradient: no slots
      if (op.kind != OpKind::moe_matmul || (summed != nullptr && summed->boolean)) return std::nullopt;
      return op.operands[2];
    };
    const std::optional<ValueId> a = route_of(gate), b = route_of(up);
    if (!a || a != b) return std::nullopt;
    return a;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_swiglu_pass() { return std::make_unique<FuseSwigluPass>(); }

}  // namespace pf
