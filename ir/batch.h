// Which inputs of a model carry the batch: the dimension that micro-batches split.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"

namespace pf {

/// The batch dimension of a model: the symbol that its graph's first input
/// has as leading dimension (what `--batch` binds, and what a pipeline splits
/// into micro-batches). Throws pf::Error, located at the graph, when that
/// dimension is not a plain symbol.
std::string batch_dimension(const Function& graph);

/// The inputs of `graph` that do not carry the batch: those whose leading
/// dimension is not the batch symbol (batch_dimension). They reach every
/// micro-batch whole (a rotary table, an attention bias, a lookup table);
/// the others are split along their first axis. An input that names the
/// batch elsewhere in its type (at another axis, or inside an expression)
/// could be neither: pf::Error naming the input, its type and the rule. Reads
/// the types as written: call it before shape inference makes them concrete.
std::vector<std::string> whole_inputs(const Function& graph);

}  // namespace pf
