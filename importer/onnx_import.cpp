// Reading an ONNX file and walking its graph into IR text.
#include "importer/onnx_import.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "importer/import_context.h"
#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf {

using namespace onnx_import;

namespace {

onnx::ModelProto read_model(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open {}", path));
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&in))
    throw Error(fmt::format("{}: not an ONNX model (the file does not parse as one)", path));
  return model;
}

int64_t opset_of(const onnx::ModelProto& model) {
  for (const onnx::OperatorSetIdProto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return o.version();
  return 0;
}

struct Input {
  std::string onnx_name;
  Tensor tensor;
};

std::vector<Input> graph_inputs(Importer& im, const std::string& path) {
  std::set<std::string> initializers;
  for (const onnx::TensorProto& t : im.graph().initializer()) initializers.insert(t.name());
  std::vector<Input> inputs;
  for (const onnx::ValueInfoProto& v : im.graph().input()) {
    if (initializers.count(v.name())) continue;  // older exports list them as inputs too
    const std::string where = fmt::format("{}: input '{}'", path, v.name());
    if (!v.type().has_tensor_type()) throw Error(where + ": not a tensor");
    const onnx::TypeProto::Tensor& t = v.type().tensor_type();
    const std::optional<DType> dtype = dtype_of(t.elem_type());
    if (!dtype) throw Error(where + ": an element type the IR does not have");
    if (!t.has_shape()) throw Error(where + ": its shape is unknown");
    Tensor tensor{im.ir_name(v.name(), true), *dtype, {}};
    for (const onnx::TensorShapeProto::Dimension& d : t.shape().dim()) {
      if (d.has_dim_value())
        tensor.shape.push_back(SymDim::of(d.dim_value()));
      else if (d.has_dim_param())
        tensor.shape.push_back(SymDim::named(im.ir_name(d.dim_param(), false)));
      else
        throw Error(where + ": a dimension has neither a size nor a name; export with dynamic_axes naming it");
    }
    inputs.push_back({v.name(), tensor});
  }
  if (inputs.empty()) throw Error(fmt::format("{}: the graph has no inputs", path));
  return inputs;
}

/// Makes the batch dimension lead the first input (see OnnxImportOptions).
void place_batch(std::vector<Input>& inputs, const std::string& batch, DimBinding& values) {
  if (batch.empty()) return;
  auto leads = [&](const Input& in) { return !in.tensor.shape.empty() && in.tensor.shape[0] == SymDim::named(batch); };
  auto it = std::find_if(inputs.begin(), inputs.end(), leads);
  if (it != inputs.end()) {
    std::rotate(inputs.begin(), it, it + 1);
    return;
  }
  // Else the first input's leading dimension is the batch, renamed: a
  // symbol everywhere it occurs, or a fixed size (an export with fixed
  // shapes) where it leads an input.
  const Tensor& first = inputs.front().tensor;
  if (first.shape.empty())
    throw Error(fmt::format("--batch-dim {}: no input leads with it, and the first input '{}' is a scalar", batch,
                            inputs.front().onnx_name));
  const SymDim lead = first.shape[0];
  if (!lead.is_number()) {
    for (Input& in : inputs)
      for (SymDim& d : in.tensor.shape)
        for (std::string& s : d.symbols)
          if (SymDim::named(s) == lead) s = batch;
    if (auto v = values.find(lead.str()); v != values.end()) values.emplace(batch, v->second);
    return;
  }
  for (Input& in : inputs)
    if (!in.tensor.shape.empty() && in.tensor.shape[0] == lead) in.tensor.shape[0] = SymDim::named(batch);
  values.emplace(batch, lead.coef);
}

std::string type_text(const Tensor& t) { return fmt::format("{}{}", dtype_name(t.dtype), shape_text(t.shape)); }

}  // namespace

std::vector<std::string> supported_onnx_ops() {
  std::vector<std::string> out;
  for (const OpRule& r : op_rules()) out.emplace_back(r.onnx_op);
  std::sort(out.begin(), out.end());
  return out;
}

OnnxImport import_onnx(const std::string& path, const OnnxImportOptions& options) {
  const onnx::ModelProto model = read_model(path);
  const int64_t opset = opset_of(model);
  if (opset < 13)
    throw Error(fmt::format("{}: opset {}; the importer reads opsets 13 to 17 (torch.onnx.export(..., "
                            "opset_version=17))",
                            path, opset));
  Importer im(model.graph(), path);
  DimBinding values = options.bind;
  std::vector<Input> inputs = graph_inputs(im, path);
  place_batch(inputs, options.batch_dim, values);
  for (const Input& in : inputs) im.set(in.onnx_name, in.tensor);

  const Fusions fusions = find_fusions(im);
  const auto& nodes = model.graph().node();
  for (int i = 0; i < nodes.size(); ++i) {
    if (fusions.absorbed.count(i)) continue;
    im.begin(nodes[i], i);
    if (auto f = fusions.at.find(i); f != fusions.at.end()) {
      translate_fusion(im, f->second);
      continue;
    }
    if (!nodes[i].domain().empty() && nodes[i].domain() != "ai.onnx")
      im.fail(fmt::format("an op of domain '{}'; only standard ONNX ops are translated", nodes[i].domain()));
    const OpRule* rule = find_rule(nodes[i].op_type());
    if (!rule)
      im.fail(fmt::format("no translation for this op type; the importer translates {}",
                          fmt::join(supported_onnx_ops(), ", ")));
    if (rule->fold && rule->fold(im)) continue;
    if (!rule->translate) im.fail("translated only when its inputs are known while importing (shapes, constants)");
    rule->translate(im);
  }

  if (model.graph().output_size() != 1)
    throw Error(fmt::format("{}: the graph has {} outputs; the importer takes models with one (the loss, or the "
                            "output a --loss is computed from)",
                            path, model.graph().output_size()));
  const std::string& out_name = model.graph().output(0).name();
  if (!im.is_known(out_name) && im.is_param(out_name))
    throw Error(fmt::format("{}: the output is a parameter itself", path));
  Tensor out = im.tensor(out_name);

  // The loss.
  std::vector<Tensor> extra_inputs;
  if (!options.loss.empty()) {
    if (out.shape.empty()) throw Error(fmt::format("{}: --loss given, but the model's output is a scalar already", path));
    const size_t colon = options.loss.find(':');
    const std::string kind = options.loss.substr(0, colon);
    std::string target = colon == std::string::npos ? "target" : options.loss.substr(colon + 1);
    target = im.ir_name(target, true);
    if (kind == "cross_entropy") {
      Tensor t{target, DType::i32, SymShape(out.shape.begin(), out.shape.end() - 1)};
      extra_inputs.push_back(t);
      out = im.emit("loss", fmt::format("cross_entropy {}", Importer::operands({out, t})), DType::f32, {});
    } else if (kind == "mse") {
      Tensor t{target, DType::f32, out.shape};
      extra_inputs.push_back(t);
      out = im.emit("loss", fmt::format("mse_loss {}", Importer::operands({out, t})), DType::f32, {});
    } else {
      throw Error(fmt::format("--loss {}: expected cross_entropy:TARGET or mse[:TARGET]", options.loss));
    }
  }

  // The text: dims, then the graph.
  std::set<std::string> symbols;
  std::vector<Tensor> signature;
  for (const Input& in : inputs) signature.push_back(in.tensor);
  signature.insert(signature.end(), extra_inputs.begin(), extra_inputs.end());
  for (const Tensor& t : signature)
    for (const SymDim& d : t.shape) symbols.insert(d.symbols.begin(), d.symbols.end());
  std::string text = fmt::format("// Imported from {} (opset {}, {} {}).\n",
                                 std::filesystem::path(path).filename().string(), opset, model.producer_name(),
                                 model.producer_version());
  for (const std::string& s : symbols) {
    auto v = values.find(s);
    text += fmt::format("dim {} = {}\n", s, v == values.end() ? 1 : v->second);
  }
  std::string stem = im.ir_name(std::filesystem::path(path).stem().string(), false);
  std::string args;
  for (const Tensor& t : signature) args += fmt::format("{}%{}: {}", args.empty() ? "" : ", ", t.name, type_text(t));
  text += fmt::format("\ngraph @{}({}) -> {} {{\n", stem, args, type_text(out));
  for (const std::string& line : im.lines()) text += line + "\n";
  text += fmt::format("  return %{}\n}}\n", out.name);

  // What was written must be a model the compiler takes: checked here, so
  // that a mistake of the importer's is found before anything is written.
  try {
    Module m = parse_module(std::make_shared<SourceFile>(path + " (imported)", text));
    verify_module(m, m.binding());
  } catch (const Error& e) {
    throw Error(fmt::format("{}: the imported model does not verify ({}); this is a defect of the importer, "
                            "please report it with the model",
                            path, e.render()));
  }
  return {text, std::move(im.weights())};
}

}  // namespace pf
