// The verifier.
#include "ir/verifier.h"

#include <fmt/format.h>

#include <functional>
#include <map>

namespace pf {

namespace {

constexpr int64_t kMaxAttrMagnitude = int64_t{1} << 50;

TensorType bind_at(const SymType& t, const DimBinding& binding, const Location& loc) {
  try {
    return t.bind(binding);
  } catch (const Error& e) {
    throw Error(e.message(), loc);
  }
}

std::string types_str(const std::vector<TensorType>& ts) {
  std::string out;
  for (size_t i = 0; i < ts.size(); ++i) out += (i ? ", " : "") + ts[i].str();
  return out;
}

void check_no_recursion(const Module& m) {
  std::map<std::string, int, std::less<>> state;  // 1: on the stack, 2: done
  std::function<void(const Function&)> visit = [&](const Function& f) {
    state[f.name] = 1;
    for (const Op& op : f.ops) {
      if (op.kind != OpKind::call) continue;
      const Function* callee = m.find_function(op.callee);
      if (!callee || callee->is_graph) continue;  // reported when the call is typed
      int s = state[callee->name];
      if (s == 1) throw Error(fmt::format("call: @{} calls itself through @{}; recursion cannot be inlined",
                                          callee->name, f.name),
                              op.loc);
      if (s == 0) visit(*callee);
    }
    state[f.name] = 2;
  };
  for (const Function& f : m.functions)
    if (state[f.name] == 0) visit(f);
}

void verify_function(const Module& m, Function& f, const DimBinding& binding) {
  for (Value& v : f.values) v.type.reset();
  for (size_t i = 0; i < f.args.size(); ++i) f.values[f.args[i]].type = bind_at(f.arg_types[i], binding, f.values[f.args[i]].loc);

  for (Op& op : f.ops) {
    const OpInfo& info = op_info(op.kind);
    std::string_view name = info.name;
    int n = static_cast<int>(op.operands.size());
    if (n < info.min_operands || (info.max_operands >= 0 && n > info.max_operands)) {
      std::string want = info.min_operands == info.max_operands ? std::to_string(info.min_operands)
                         : info.max_operands < 0 ? fmt::format("at least {}", info.min_operands)
                                                 : fmt::format("{} to {}", info.min_operands, info.max_operands);
      throw Error(fmt::format("{}: takes {} operand{}, got {}", name, want, want == "1" ? "" : "s", n), op.loc);
    }
    for (const AttrSpec& spec : info.attrs)
      if (spec.required && !op.attr(spec.name))
        throw Error(fmt::format("{}: missing attribute '{}'", name, spec.name), op.loc);
    if (info.needs_declared_type && op.declared.empty())
      throw Error(fmt::format("{}: needs its result type written after ':', e.g. ': f32[C]'", name), op.loc);

    std::vector<TensorType> operands;
    for (ValueId v : op.operands) operands.push_back(*f.values[v].type);
    std::vector<TensorType> declared;
    for (const SymType& t : op.declared) declared.push_back(bind_at(t, binding, op.loc));
    OpAttrs attrs = evaluate_attrs(op, binding);

    std::vector<TensorType> results;
    if (op.kind == OpKind::call) {
      const Function* callee = m.find_function(op.callee);
      if (!callee) throw Error(fmt::format("call: no function named @{}", op.callee), op.loc);
      if (callee->is_graph) throw Error(fmt::format("call: @{} is the graph; only a func can be called", op.callee), op.loc);
      if (callee->args.size() != op.operands.size())
        throw Error(fmt::format("call: @{} takes {} argument{}, got {}", op.callee, callee->args.size(),
                                callee->args.size() == 1 ? "" : "s", op.operands.size()),
                    op.loc);
      for (size_t i = 0; i < operands.size(); ++i) {
        TensorType want = bind_at(callee->arg_types[i], binding, op.loc);
        if (operands[i] != want)
          throw Error(fmt::format("call: argument {} of @{} is {}, but %{} is {}", i + 1, op.callee, want.str(),
                                  f.values[op.operands[i]].name, operands[i].str()),
                      op.loc);
      }
      for (const SymType& t : callee->result_types) results.push_back(bind_at(t, binding, op.loc));
      if (attrs.has("repeat")) {
        int64_t repeat = attrs.get_int("repeat", 1);
        if (repeat < 1) throw Error(fmt::format("call: repeat must be at least 1, got {}", repeat), op.loc);
        // Each result feeds the next copy's operand of the same place: the
        // layer's activation, and any values the layers carry along (a sum
        // of their auxiliary losses).
        if (operands.empty() || operands != results)
          throw Error(fmt::format("call: repeat needs @{} to map its arguments to results of the same types, in "
                                  "order, so that each copy feeds the next; it maps ({}) to ({})",
                                  op.callee, types_str(operands), types_str(results)),
                      op.loc);
      }
    } else {
      try {
        results = info.shape(ShapeContext{name, operands, attrs, declared});
      } catch (const Error& e) {
        throw Error(fmt::format("{}: {}", name, e.message()), op.loc);
      }
    }

    if (results.size() != op.results.size())
      throw Error(fmt::format("{}: produces {} result{}, but {} {} named", name, results.size(),
                              results.size() == 1 ? "" : "s", op.results.size(),
                              op.results.size() == 1 ? "is" : "are"),
                  op.loc);
    if (!declared.empty()) {
      if (declared.size() != results.size())
        throw Error(fmt::format("{}: {} result type{} written for {} result{}", name, declared.size(),
                                declared.size() == 1 ? "" : "s", results.size(), results.size() == 1 ? "" : "s"),
                    op.loc);
      if (declared != results)
        throw Error(fmt::format("{}: the result is {}, but {} is written", name, types_str(results),
                                types_str(declared)),
                    op.loc);
    }
    for (size_t i = 0; i < results.size(); ++i) f.values[op.results[i]].type = results[i];
  }

  if (f.returns.size() != f.result_types.size())
    throw Error(fmt::format("return: @{} returns {} value{}, but {} {} given", f.name, f.result_types.size(),
                            f.result_types.size() == 1 ? "" : "s", f.returns.size(),
                            f.returns.size() == 1 ? "is" : "are"),
                f.return_loc);
  for (size_t i = 0; i < f.returns.size(); ++i) {
    TensorType want = bind_at(f.result_types[i], binding, f.loc);
    const TensorType& got = *f.values[f.returns[i]].type;
    if (got != want)
      throw Error(fmt::format("return: result {} of @{} is declared {}, but %{} is {}", i + 1, f.name, want.str(),
                              f.values[f.returns[i]].name, got.str()),
                  f.return_loc);
  }
}

}  // namespace

OpAttrs evaluate_attrs(const Op& op, const DimBinding& binding) {
  OpAttrs out;
  for (const NamedAttr& a : op.attrs) {
    const AttrSpec* spec = find_attr_spec(op.kind, a.name);
    if (!spec) throw Error(fmt::format("{}: unknown attribute '{}'", op_name(op.kind), a.name), a.loc);
    OpAttrs::Entry e;
    e.name = spec->name;
    e.kind = a.value.kind;
    auto eval = [&](const DimExpr& d) {
      std::string missing;
      auto v = d.evaluate(binding, &missing);
      if (!v) {
        if (!missing.empty())
          throw Error(fmt::format("{}: unknown dimension '{}' in attribute '{}'", op_name(op.kind), missing, a.name),
                      a.loc);
        throw Error(fmt::format("{}: attribute '{}' = {} overflows or divides by zero", op_name(op.kind), a.name,
                                d.str()),
                    a.loc);
      }
      if (*v > kMaxAttrMagnitude || *v < -kMaxAttrMagnitude)
        throw Error(fmt::format("{}: attribute '{}' = {} is out of range (|value| <= 2^50)", op_name(op.kind),
                                a.name, *v),
                    a.loc);
      return *v;
    };
    switch (a.value.kind) {
      case AttrKind::dim:
        e.ints.push_back(eval(a.value.dim));
        break;
      case AttrKind::dims:
        for (const DimExpr& d : a.value.dims) e.ints.push_back(eval(d));
        break;
      case AttrKind::real:
        e.real = a.value.real;
        break;
      case AttrKind::boolean:
        e.boolean = a.value.boolean;
        break;
      case AttrKind::dtype:
        e.dtype = a.value.dtype;
        break;
      case AttrKind::string:
        e.string = a.value.string;
        break;
      case AttrKind::init:
        break;
    }
    out.add(std::move(e));
  }
  return out;
}

void verify_module(Module& m, const DimBinding& binding, const VerifyOptions& options) {
  Function& graph = m.graph();
  check_no_recursion(m);
  for (Function& f : m.functions) verify_function(m, f, binding);
  if (options.require_loss) {
    if (graph.returns.empty())
      throw Error(fmt::format("@{} returns nothing; a training graph returns its scalar loss first", graph.name),
                  graph.return_loc);
    const TensorType& loss = *graph.values[graph.returns[0]].type;
    if (!loss.is_scalar() || !is_float(loss.dtype))
      throw Error(fmt::format("@{} has no scalar loss: its first result %{} is {}; a training graph returns a "
                              "float scalar such as cross_entropy's first",
                              graph.name, graph.values[graph.returns[0]].name, loss.str()),
                  graph.return_loc);
  }
}

}  // namespace pf
