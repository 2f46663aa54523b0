// cse: merges an op into an earlier identical one (same op, operands,
// attributes and result types). Parameters and calls are never merged: two
// parameters with the same initializer are still two parameters.
#include <map>

#include "ir/printer.h"
#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

class CsePass final : public Pass {
 public:
  std::string_view name() const override { return "cse"; }
  std::string_view summary() const override { return "merge identical pure ops"; }

  bool run(Module& m, PassContext&) override {
    bool changed = false;
    for (Function& f : m.functions) changed |= run_on(f);
    return changed;
  }

 private:
  // The op's text without its result names and its layer is its identity:
  // operands are value names, which are unique within the function.
  static std::string key(const Function& f, Op op) {
    op.erase_attr("layer");
    std::string text = print_op(f, op);
    return text.substr(text.find(" = "));
  }

  static bool run_on(Function& f) {
    std::map<std::string, int> seen;
    std::vector<bool> dead(f.ops.size(), false);
    bool changed = false;
    for (size_t i = 0; i < f.ops.size(); ++i) {
      const Op& op = f.ops[i];
      if (!op_info(op.kind).pure) continue;
      auto [it, fresh] = seen.emplace(key(f, op), static_cast<int>(i));
      if (fresh) continue;
      const Op& first = f.ops[it->second];
      for (size_t r = 0; r < op.results.size(); ++r) replace_all_uses(f, op.results[r], first.results[r]);
      dead[i] = true;
      changed = true;
    }
    if (!changed) return false;
    erase_ops(f, dead);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_cse_pass() { return std::make_unique<CsePass>(); }

}  // namespace pf
