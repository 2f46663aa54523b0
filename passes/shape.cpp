// shape: computes concrete types under the binding and writes them into the
// IR, so every type, dimension attribute and `dim` declaration reads as a
// number (`f32[8,64,768]`, `shape=[8,64,12,64]`). The output is what the
// partitioner and the backends see.
#include "ir/verifier.h"
#include "passes/pass.h"

namespace pf {

namespace {

class ShapePass final : public Pass {
 public:
  std::string_view name() const override { return "shape"; }
  std::string_view summary() const override { return "infer concrete shapes for the binding and write them in"; }

  bool run(Module& m, PassContext& ctx) override {
    verify_module(m, ctx.binding);
    bool changed = false;
    for (DimDecl& d : m.dims) {
      int64_t bound = ctx.binding.at(d.name);
      changed |= d.value != bound;
      d.value = bound;
    }
    for (Function& f : m.functions) {
      for (size_t i = 0; i < f.args.size(); ++i) changed |= concretize(f.arg_types[i], *f.values[f.args[i]].type);
      for (size_t i = 0; i < f.result_types.size(); ++i)
        changed |= concretize(f.result_types[i], f.result_types[i].bind(ctx.binding));
      for (Op& op : f.ops) {
        if (op.declared.size() != op.results.size()) {
          op.declared.resize(op.results.size());
          changed = true;
        }
        for (size_t i = 0; i < op.results.size(); ++i)
          changed |= concretize(op.declared[i], *f.values[op.results[i]].type);
        for (NamedAttr& a : op.attrs) changed |= concretize(a.value, ctx.binding);
      }
    }
    return changed;
  }

 private:
  static bool concretize(SymType& written, const TensorType& type) {
    SymType concrete = SymType::from(type);
    if (written.dtype == concrete.dtype && written.dims == concrete.dims) return false;
    written = std::move(concrete);
    return true;
  }

  static bool concretize(DimExpr& d, const DimBinding& binding) {
    if (d.is_constant()) return false;
    d = DimExpr(*d.evaluate(binding));  // the verifier has evaluated it already
    return true;
  }

  static bool concretize(Attr& a, const DimBinding& binding) {
    bool changed = false;
    if (a.kind == AttrKind::dim) changed |= concretize(a.dim, binding);
    if (a.kind == AttrKind::dims)
      for (DimExpr& d : a.dims) changed |= concretize(d, binding);
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> make_shape_pass() { return std::make_unique<ShapePass>(); }

}  // namespace pf
