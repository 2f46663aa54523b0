// cost: annotates every op with `flops` and `bytes` for one execution under
// the binding, from the op table's cost rules.
#include "ir/verifier.h"
#include "passes/cost_summary.h"
#include "passes/pass.h"

namespace pf {

namespace {

class CostPass final : public Pass {
 public:
  std::string_view name() const override { return "cost"; }
  std::string_view summary() const override { return "annotate ops with FLOPs and bytes moved"; }

  bool run(Module& m, PassContext& ctx) override {
    verify_module(m, ctx.binding);
    bool changed = false;
    for (Function& f : m.functions) {
      for (Op& op : f.ops) {
        OpCost cost = op_cost(f, op, ctx.binding, &m);
        Attr flops = Attr::of_dim(cost.flops), bytes = Attr::of_dim(cost.bytes);
        const Attr* old_flops = op.attr("flops");
        const Attr* old_bytes = op.attr("bytes");
        if (old_flops && *old_flops == flops && old_bytes && *old_bytes == bytes) continue;
        op.set_attr("flops", flops);
        op.set_attr("bytes", bytes);
        changed = true;
      }
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> make_cost_pass() { return std::make_unique<CostPass>(); }

}  // namespace pf
