// The in-memory IR: a module holds dimension declarations, `func`s and one
// `graph`; each function is a list of ops in SSA form over named values.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ir/attr.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"
#include "ir/types.h"

namespace pf {

using ValueId = int;

/// An SSA value: a function argument or an op result.
struct Value {
  std::string name;                  // without the leading '%'
  std::optional<TensorType> type;    // set by shape inference
  int def_op = -1;                   // defining op's index; -1 for an argument
  Location loc;
};

struct NamedAttr {
  std::string name;
  Attr value;
  Location loc;
};

struct Op {
  OpKind kind = OpKind::add;
  std::vector<ValueId> operands;
  std::vector<ValueId> results;
  std::vector<NamedAttr> attrs;
  std::vector<SymType> declared;     // result types as written; empty if none
  std::string callee;                // `call` only
  Location loc;

  const Attr* attr(std::string_view name) const;
  void set_attr(std::string name, Attr value);
  void erase_attr(std::string_view name);
  /// The `layer` attribute, or "" when the op belongs to none.
  std::string layer() const;
};

/// A `func` (a reusable body, inlined by the inline pass) or the `graph`
/// (the model itself; its first result is the loss when training).
struct Function {
  bool is_graph = false;
  std::string name;                  // without the leading '@'
  std::vector<ValueId> args;
  std::vector<SymType> arg_types;
  std::vector<SymType> result_types;
  std::vector<Value> values;
  std::vector<Op> ops;
  std::vector<ValueId> returns;
  Location loc;
  Location return_loc;

  ValueId add_value(std::string value_name, Location value_loc = {});
  /// The id of the value named `name`, or -1.
  ValueId find_value(std::string_view value_name) const;
  const TensorType& type_of(ValueId v) const;
  /// For every value, the ops that use it (in op order).
  std::vector<std::vector<int>> users() const;
};

struct DimDecl {
  std::string name;
  int64_t value = 0;
  Location loc;
};

struct Module {
  std::shared_ptr<const SourceFile> source;  // the text it was parsed from, if any
  std::vector<DimDecl> dims;
  std::vector<Function> functions;

  /// The declared dimension values, overridden by `overrides`; an override of
  /// an undeclared dimension is an error naming it.
  DimBinding binding(const DimBinding& overrides = {}) const;
  Function* find_function(std::string_view name);
  const Function* find_function(std::string_view name) const;
  /// The model's graph; throws Error if the module has none.
  Function& graph();
  const Function& graph() const;
};

/// Parses `B=8,T=64` (as given to --bind); throws Error on bad syntax.
DimBinding parse_binding(std::string_view text);

}  // namespace pf
