// `pipeforge import`: an ONNX model as IR text, and its weights.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "importer/onnx_import.h"
#include "runtime/safetensors.h"
#include "tools/command.h"

namespace pf::tools {

namespace {
struct ImportOptions {
  std::string file;
  std::string output;
  std::string weights;
  std::string bind;
  OnnxImportOptions onnx;
};
}  // namespace

void add_import_command(CLI::App& app) {
  auto o = std::make_shared<ImportOptions>();
  CLI::App* cmd = app.add_subcommand("import", "translate an ONNX model (torch.onnx.export, opsets 13-17) into IR");
  cmd->add_option("file", o->file, "ONNX model (.onnx)")->required();
  cmd->add_option("-o,--output", o->output, "write the IR here (- for standard output)")->required();
  cmd->add_option("--weights", o->weights,
                  "write the parameters' values here (safetensors, by their PyTorch names), for run --init-from");
  cmd->add_option("--batch-dim", o->onnx.batch_dim,
                  "the symbolic dimension that is the batch (default: the first input's leading one); for an "
                  "export with fixed shapes, the name to give the first input's leading size");
  cmd->add_option("--loss", o->onnx.loss,
                  "append a loss to the model's output: cross_entropy:TARGET (class indices) or mse[:TARGET]");
  cmd->add_option("--bind", o->bind, "values of the symbolic dimensions in the IR's dim declarations, e.g. batch=32");
  cmd->callback([o] {
    if (!o->bind.empty()) o->onnx.bind = parse_binding(o->bind);
    const OnnxImport imported = import_onnx(o->file, o->onnx);
    // Nothing is written unless the whole model translated.
    if (!o->weights.empty()) {
      SafeTensors file;
      file.metadata["source"] = o->file;
      for (const ImportedWeight& w : imported.weights) file.add(w.name, w.type, w.values.data());
      file.write(o->weights);
    }
    write_output(o->output, imported.ir);
    if (o->output != "-") {
      int64_t values = 0;
      for (const ImportedWeight& w : imported.weights) values += w.type.numel();
      std::cout << fmt::format("wrote {} ({} parameters, {} values){}\n", o->output, imported.weights.size(), values,
                               o->weights.empty() ? "" : fmt::format(" and {}", o->weights));
    }
  });
}

}  // namespace pf::tools
