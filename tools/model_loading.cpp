// Reading a model for a command or the Python module: parse, bind dimensions, verify.
#include "tools/model_loading.h"

#include <iostream>
#include <sstream>

#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf::tools {

std::shared_ptr<const SourceFile> read_model_input(const std::string& path) {
  if (path != "-") return read_source_file(path);
  std::ostringstream text;
  text << std::cin.rdbuf();
  return std::make_shared<SourceFile>("<stdin>", text.str());
}

LoadedModel load_model(const std::string& path, const std::string& bind, bool require_loss) {
  return load_model(read_model_input(path), bind, require_loss);
}

LoadedModel load_model(std::shared_ptr<const SourceFile> source, const std::string& bind, bool require_loss) {
  LoadedModel loaded{parse_module(source), {}};
  loaded.binding = loaded.module.binding(parse_binding(bind));
  verify_module(loaded.module, loaded.binding, VerifyOptions{require_loss});
  return loaded;
}

void bind_batch(LoadedModel& model, int64_t batch) {
  const Function& g = model.module.graph();
  if (g.args.empty() || g.arg_types[0].dims.empty())
    throw Error("--batch: @" + g.name + "'s first input has no batch dimension");
  const DimExpr& d = g.arg_types[0].dims[0];
  if (d.kind() == DimExpr::Kind::symbol) {
    model.binding[d.name()] = batch;
  } else if (*d.evaluate(model.binding) != batch) {
    throw Error("--batch " + std::to_string(batch) + ": @" + g.name + "'s batch dimension is fixed to " + d.str());
  }
  verify_module(model.module, model.binding, VerifyOptions{true});
}

}  // namespace pf::tools
