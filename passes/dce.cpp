// dce: removes ops none of whose results reach a returned value, parameters
// included (an unused parameter would still be trained and checkpointed).
#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

class DcePass final : public Pass {
 public:
  std::string_view name() const override { return "dce"; }
  std::string_view summary() const override { return "remove ops whose results are never used"; }

  bool run(Module& m, PassContext&) override {
    bool changed = false;
    for (Function& f : m.functions) changed |= run_on(f);
    return changed;
  }

 private:
  static bool run_on(Function& f) {
    std::vector<bool> live_value(f.values.size(), false);
    for (ValueId r : f.returns) live_value[r] = true;
    std::vector<bool> live_op(f.ops.size(), false);
    // Ops are in definition order, so one backward sweep finds every live op.
    for (size_t i = f.ops.size(); i-- > 0;) {
      const Op& op = f.ops[i];
      for (ValueId r : op.results) live_op[i] = live_op[i] || live_value[r];
      if (live_op[i])
        for (ValueId v : op.operands) live_value[v] = true;
    }
    size_t before = f.ops.size();
    size_t index = 0;
    std::erase_if(f.ops, [&](const Op&) { return !live_op[index++]; });
    if (f.ops.size() == before) return false;
    compact_values(f);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_dce_pass() { return std::make_unique<DcePass>(); }

}  // namespace pf
