// The batch dimension of a model and the inputs that carry it.
#include "ir/batch.h"

#include <fmt/format.h>

#include "ir/diagnostic.h"

namespace pf {

std::string batch_dimension(const Function& graph) {
  if (graph.args.empty() || graph.arg_types[0].dims.empty() ||
      graph.arg_types[0].dims[0].kind() != DimExpr::Kind::symbol)
    throw Error(fmt::format("@{}'s first input has no symbolic batch dimension to split into micro-batches", graph.name),
                graph.loc);
  return graph.arg_types[0].dims[0].name();
}

std::vector<std::string> whole_inputs(const Function& graph) {
  const std::string batch = batch_dimension(graph);
  std::vector<std::string> whole;
  for (size_t a = 0; a < graph.args.size(); ++a) {
    const SymType& type = graph.arg_types[a];
    const std::string& name = graph.values[graph.args[a]].name;
    const bool leading =
        !type.dims.empty() && type.dims[0].kind() == DimExpr::Kind::symbol && type.dims[0].name() == batch;
    for (size_t axis = leading ? 1 : 0; axis < type.dims.size(); ++axis)
      if (type.dims[axis].mentions(batch))
        throw Error(fmt::format("input %{} is {}: it names the batch dimension {} at axis {}; an input carries the "
                                "batch as its first axis, or does not name it at all",
                                name, type.str(), batch, axis),
                    graph.values[graph.args[a]].loc);
    if (!leading) whole.push_back(name);
  }
  return whole;
}

}  // namespace pf
