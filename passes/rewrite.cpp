// Shared in-place editing of functions.
#include "passes/rewrite.h"

#include <vector>

namespace pf {

FreshNames::FreshNames(const Function& f) {
  for (const Value& v : f.values) used_.insert(v.name);
}

std::string FreshNames::operator()(const std::string& base) {
  std::string name = base;
  for (int i = 1; used_.count(name); ++i) name = base + "." + std::to_string(i);
  used_.insert(name);
  return name;
}

void replace_all_uses(Function& f, ValueId from, ValueId to) {
  for (Op& op : f.ops)
    for (ValueId& v : op.operands)
      if (v == from) v = to;
  for (ValueId& v : f.returns)
    if (v == from) v = to;
}

void compact_values(Function& f) {
  std::vector<bool> live(f.values.size(), false);
  for (ValueId a : f.args) live[a] = true;
  for (const Op& op : f.ops)
    for (ValueId r : op.results) live[r] = true;
  std::vector<ValueId> remap(f.values.size(), -1);
  std::vector<Value> kept;
  for (size_t i = 0; i < f.values.size(); ++i) {
    if (!live[i]) continue;
    remap[i] = static_cast<ValueId>(kept.size());
    kept.push_back(std::move(f.values[i]));
  }
  f.values = std::move(kept);
  for (ValueId& a : f.args) a = remap[a];
  for (ValueId& r : f.returns) r = remap[r];
  for (size_t i = 0; i < f.ops.size(); ++i) {
    Op& op = f.ops[i];
    for (ValueId& v : op.operands) v = remap[v];
    for (ValueId& r : op.results) {
      r = remap[r];
      f.values[r].def_op = static_cast<int>(i);
    }
  }
  for (ValueId a : f.args) f.values[a].def_op = -1;
}

void erase_ops(Function& f, const std::vector<bool>& dead) {
  size_t index = 0;
  std::erase_if(f.ops, [&](const Op&) { return dead[index++]; });
  compact_values(f);
}

}  // namespace pf
