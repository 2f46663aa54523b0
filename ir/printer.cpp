// Canonical text of the IR.
//
// Canonical form: dimension declarations first, one per line; then each
// function, separated by a blank line; two-space indentation; attributes in
// the op table's order, then the common ones; comments are not kept.
#include "ir/printer.h"

namespace pf {

namespace {

std::string value_ref(const Function& f, ValueId v) { return "%" + f.values[v].name; }

std::string type_text(const Function& f, const Op& op, size_t result) {
  if (result < op.declared.size()) return op.declared[result].str();
  const auto& type = f.values[op.results[result]].type;
  return type ? type->str() : std::string();
}

void print_attrs(const Op& op, std::string& out) {
  auto emit = [&](std::string_view name) {
    if (const Attr* a = op.attr(name)) {
      out += ' ';
      out += name;
      out += '=';
      out += a->str();
    }
  };
  for (const AttrSpec& spec : op_info(op.kind).attrs) emit(spec.name);
  for (const AttrSpec& spec : kCommonAttrs) emit(spec.name);
}

}  // namespace

std::string print_op(const Function& f, const Op& op) {
  std::string out;
  for (size_t i = 0; i < op.results.size(); ++i) {
    if (i) out += ", ";
    out += value_ref(f, op.results[i]);
  }
  out += " = ";
  out += op_name(op.kind);
  if (op.kind == OpKind::call) {
    out += " @" + op.callee + "(";
    for (size_t i = 0; i < op.operands.size(); ++i) {
      if (i) out += ", ";
      out += value_ref(f, op.operands[i]);
    }
    out += ")";
  } else {
    for (size_t i = 0; i < op.operands.size(); ++i) {
      out += i ? ", " : " ";
      out += value_ref(f, op.operands[i]);
    }
  }
  print_attrs(op, out);
  std::string types;
  for (size_t i = 0; i < op.results.size(); ++i) {
    std::string t = type_text(f, op, i);
    if (t.empty()) return out;  // untyped ops print without ': types'
    types += (i ? ", " : "") + t;
  }
  return out + " : " + types;
}

std::string print_function(const Function& f) {
  std::string out = f.is_graph ? "graph @" : "func @";
  out += f.name + "(";
  for (size_t i = 0; i < f.args.size(); ++i) {
    if (i) out += ", ";
    out += value_ref(f, f.args[i]) + ": " + f.arg_types[i].str();
  }
  out += ") -> ";
  if (f.result_types.size() == 1) {
    out += f.result_types[0].str();
  } else {
    out += "(";
    for (size_t i = 0; i < f.result_types.size(); ++i) out += (i ? ", " : "") + f.result_types[i].str();
    out += ")";
  }
  out += " {\n";
  for (const Op& op : f.ops) out += "  " + print_op(f, op) + "\n";
  out += "  return";
  for (size_t i = 0; i < f.returns.size(); ++i) out += (i ? ", " : " ") + value_ref(f, f.returns[i]);
  out += "\n}\n";
  return out;
}

std::string print_module(const Module& m) {
  std::string out;
  for (const DimDecl& d : m.dims) out += "dim " + d.name + " = " + std::to_string(d.value) + "\n";
  for (const Function& f : m.functions) {
    if (!out.empty()) out += "\n";
    out += print_function(f);
  }
  return out;
}

}  // namespace pf
