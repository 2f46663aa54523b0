// Small tools that passes share for editing a function in place.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "ir/module.h"

namespace pf {

/// Names for new values that no value of a function has yet: `base`, else
/// `base.1`, `base.2`... Each name it gives is taken from then on.
class FreshNames {
 public:
  explicit FreshNames(const Function& f);
  std::string operator()(const std::string& base);

 private:
  std::unordered_set<std::string> used_;
};

/// Replaces every use of `from` (operands and returns) with `to`.
void replace_all_uses(Function& f, ValueId from, ValueId to);

/// Removes the values that are neither arguments nor defined by an op (left
/// behind when ops are deleted or values replaced), renumbers the rest and
/// recomputes every value's defining op.
void compact_values(Function& f);

/// Removes the ops marked in `dead` (one flag per op) and the values they
/// leave behind (compact_values).
void erase_ops(Function& f, const std::vector<bool>& dead);

}  // namespace pf
