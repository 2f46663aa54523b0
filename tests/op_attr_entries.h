// Op attributes for kernel tests: one entry of each kind, for OpAttrs::add.
// An entry's name is a string_view, so names must outlive the OpAttrs (the
// tests pass string literals).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ir/op_table.h"

namespace pf::testing_support {

inline OpAttrs::Entry attr_entry(std::string_view name, AttrKind kind) {
  OpAttrs::Entry e;
  e.name = name;
  e.kind = kind;
  return e;
}

inline OpAttrs::Entry dim_attr(std::string_view name, int64_t v) {
  OpAttrs::Entry e = attr_entry(name, AttrKind::dim);
  e.ints = {v};
  return e;
}

inline OpAttrs::Entry dims_attr(std::string_view name, std::vector<int64_t> v) {
  OpAttrs::Entry e = attr_entry(name, AttrKind::dims);
  e.ints = std::move(v);
  return e;
}

inline OpAttrs::Entry real_attr(std::string_view name, double v) {
  OpAttrs::Entry e = attr_entry(name, AttrKind::real);
  e.real = v;
  return e;
}

inline OpAttrs::Entry bool_attr(std::string_view name, bool v) {
  OpAttrs::Entry e = attr_entry(name, AttrKind::boolean);
  e.boolean = v;
  return e;
}

inline OpAttrs::Entry dtype_attr(std::string_view name, DType v) {
  OpAttrs::Entry e = attr_entry(name, AttrKind::dtype);
  e.dtype = v;
  return e;
}

inline OpAttrs::Entry string_attr(std::string_view name, std::string v) {
  OpAttrs::Entry e = attr_entry(name, AttrKind::string);
  e.string = std::move(v);
  return e;
}

}  // namespace pf::testing_support
