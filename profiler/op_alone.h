// One op of a model as a graph of its own, for timing it alone.
#pragma once

#include "ir/module.h"

namespace pf {

/// A graph holding only `op` of `g` (verified, its types set): operands that
/// `g` declares as parameters stay parameters, so that a product reads its
/// weight as a stage does (kept packed through a step); the others become
/// the graph's arguments, in order of first use. The graph returns the sum
/// of the op's first result where that is a float tensor (a loss to
/// differentiate), else the result itself.
Module op_alone_module(const Function& g, const Op& op);

}  // namespace pf
