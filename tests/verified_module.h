// Test helper: a module parsed from text and verified with its declared dimensions.
#pragma once

#include <string>

#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf {

inline Module verified_module(const std::string& text) {
  Module m = parse_module_text("t.pf", text);
  verify_module(m, m.binding());
  return m;
}

}  // namespace pf
