// The in-memory IR.
#include "ir/module.h"

#include <charconv>

namespace pf {

const Attr* Op::attr(std::string_view name) const {
  for (const NamedAttr& a : attrs)
    if (a.name == name) return &a.value;
  return nullptr;
}

void Op::set_attr(std::string name, Attr value) {
  for (NamedAttr& a : attrs)
    if (a.name == name) {
      a.value = std::move(value);
      return;
    }
  attrs.push_back({std::move(name), std::move(value), {}});
}

void Op::erase_attr(std::string_view name) {
  std::erase_if(attrs, [&](const NamedAttr& a) { return a.name == name; });
}

std::string Op::layer() const {
  const Attr* a = attr("layer");
  return a ? a->string : std::string();
}

ValueId Function::add_value(std::string value_name, Location value_loc) {
  values.push_back({std::move(value_name), std::nullopt, -1, std::move(value_loc)});
  return static_cast<ValueId>(values.size() - 1);
}

ValueId Function::find_value(std::string_view value_name) const {
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i].name == value_name) return static_cast<ValueId>(i);
  return -1;
}

const TensorType& Function::type_of(ValueId v) const {
  const Value& value = values.at(v);
  if (!value.type) throw Error("value %" + value.name + " has no type; run shape inference first", value.loc);
  return *value.type;
}

std::vector<std::vector<int>> Function::users() const {
  std::vector<std::vector<int>> out(values.size());
  for (size_t i = 0; i < ops.size(); ++i)
    for (ValueId v : ops[i].operands) out[v].push_back(static_cast<int>(i));
  return out;
}

DimBinding Module::binding(const DimBinding& overrides) const {
  DimBinding b;
  for (const DimDecl& d : dims) b[d.name] = d.value;
  for (const auto& [name, value] : overrides) {
    if (!b.count(name)) {
      std::string known;
      for (const DimDecl& d : dims) known += (known.empty() ? "" : ", ") + d.name;
      throw Error("--bind: the model declares no dimension '" + name + "' (it declares: " +
                  (known.empty() ? "none" : known) + ")");
    }
    b[name] = value;
  }
  return b;
}

Function* Module::find_function(std::string_view name) {
  for (Function& f : functions)
    if (f.name == name) return &f;
  return nullptr;
}

const Function* Module::find_function(std::string_view name) const {
  for (const Function& f : functions)
    if (f.name == name) return &f;
  return nullptr;
}

Function& Module::graph() {
  for (Function& f : functions)
    if (f.is_graph) return f;
  Location end;
  if (source) {
    int lines = 1;
    for (char c : source->text()) lines += c == '\n';
    if (!source->text().empty() && source->text().back() == '\n') --lines;
    end = {source, lines, 1};
  }
  throw Error("the module has no graph; a model needs one 'graph @name(...) -> f32[] { ... }'", end);
}

const Function& Module::graph() const { return const_cast<Module*>(this)->graph(); }

DimBinding parse_binding(std::string_view text) {
  DimBinding b;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(pos, comma - pos);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0)
      throw Error("--bind: expected NAME=VALUE, got '" + std::string(item) + "'");
    std::string_view name = item.substr(0, eq), num = item.substr(eq + 1);
    int64_t value = 0;
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), value);
    if (ec != std::errc() || end != num.data() + num.size() || value <= 0)
      throw Error("--bind: '" + std::string(name) + "' needs a positive integer, got '" + std::string(num) + "'");
    b[std::string(name)] = value;
    pos = comma + 1;
  }
  return b;
}

}  // namespace pf
