// Writes a Module as canonical text: what the parser reads back unchanged.
#pragma once

#include <string>

#include "ir/module.h"

namespace pf {

/// How result types are written: as declared (symbolic, `f32[B,T,C]`) when
/// known, else the inferred concrete type.
std::string print_module(const Module& m);
std::string print_function(const Function& f);
std::string print_op(const Function& f, const Op& op);

}  // namespace pf
