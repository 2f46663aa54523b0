// The importer's state while it walks one ONNX graph, shared by the op
// table (onnx_ops.cpp), the constant folding rules and the fusions.
#pragma once

#include <onnx/onnx_pb.h>

#include <map>
#include <utility>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "importer/onnx_import.h"
#include "importer/sym_dim.h"
#include "ir/dtype.h"

namespace pf::onnx_import {

/// A value known while importing: a constant, or a shape a Shape node read
/// off a tensor (its entries may be symbolic). Integers and booleans are in
/// `ints`, floating-point numbers in `reals`.
struct Known {
  int32_t type = onnx::TensorProto::INT64;  // ONNX element type
  std::vector<int64_t> shape;
  std::vector<SymDim> ints;
  std::vector<double> reals;

  bool is_real() const;
  int64_t size() const;
  /// The single number of a one-element constant; nullopt otherwise.
  std::optional<double> scalar() const;
};

/// A value the IR computes: its name there and its type.
struct Tensor {
  std::string name;
  DType dtype = DType::f32;
  SymShape shape;
};

/// One node's translation, as several rules of the table see it.
class Importer {
 public:
  Importer(const onnx::GraphProto& graph, std::string source);

  // ---- Reading the graph.
  const onnx::GraphProto& graph() const { return graph_; }
  /// The node producing `value`, or nullptr (an input, an initializer).
  const onnx::NodeProto* producer(const std::string& value) const;
  /// How many node inputs (and graph outputs) read `value`.
  int uses(const std::string& value) const;
  /// The nodes reading `value`, each with the input slot it reads it in.
  const std::vector<std::pair<const onnx::NodeProto*, int>>& readers(const std::string& value) const;
  /// The number a one-element Constant node or initializer holds.
  std::optional<double> constant_number(const std::string& value) const;

  // ---- Values.
  bool is_known(const std::string& value) const { return known_.count(value) > 0; }
  const Known* known(const std::string& value) const;
  bool is_param(const std::string& value) const { return pending_params_.count(value) > 0; }
  /// The tensor behind `value`: declares a parameter at its first use, and
  /// turns a one-element constant into an IR constant.
  Tensor tensor(const std::string& value);
  /// Input `i` of the current node, as a tensor; "" inputs are errors.
  Tensor input(int i);
  /// Input `i` of the current node as a constant; fails when it is not one.
  const Known& known_input(int i, const char* what);
  bool has_input(int i) const;
  void set(const std::string& value, Known k);
  void set(const std::string& value, Tensor t);
  /// Makes `value` the tensor `t` itself (an op that changes nothing).
  void alias(const std::string& value, const Tensor& t) { set(value, t); }
  /// A parameter read transposed by the matmul that uses it.
  std::map<std::string, std::string> transposed;

  // ---- Writing the IR.
  /// Appends `%result = <op_text> : <type>`; the result's name comes from
  /// `value` (the ONNX output it stands for).
  Tensor emit(const std::string& value, const std::string& op_text, DType dtype, const SymShape& shape);
  /// The same for an op with several results.
  std::vector<Tensor> emit_many(const std::vector<std::string>& values, const std::string& op_text, DType dtype,
                                const std::vector<SymShape>& shapes);
  /// `%a, %b` of the given tensors.
  static std::string operands(const std::vector<Tensor>& ts);

  // ---- The current node.
  void begin(const onnx::NodeProto& node, int index);
  const onnx::NodeProto& node() const { return *node_; }
  int64_t int_attr(const char* name, int64_t fallback) const;
  double real_attr(const char* name, double fallback) const;
  std::optional<std::vector<int64_t>> ints_attr(const char* name) const;
  /// Throws Error naming the file and the current node.
  [[noreturn]] void fail(const std::string& message) const;

  // ---- Results.
  const std::vector<std::string>& lines() const { return lines_; }
  std::vector<ImportedWeight>& weights() { return weights_; }
  /// An IR-safe name for `text`, unique in the function when `unique`.
  std::string ir_name(const std::string& text, bool unique);
  int dropout_seed = 0;

 private:
  const onnx::GraphProto& graph_;
  std::string source_;
  std::map<std::string, const onnx::NodeProto*> producers_;
  std::map<std::string, int> uses_;
  std::map<std::string, std::vector<std::pair<const onnx::NodeProto*, int>>> readers_;
  std::map<std::string, Known> known_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, const onnx::TensorProto*> pending_params_;
  std::set<std::string> names_;
  std::vector<std::string> lines_;
  std::vector<ImportedWeight> weights_;
  const onnx::NodeProto* node_ = nullptr;
  int node_index_ = -1;
  std::string layer_;
};

/// The data of an ONNX tensor (an initializer or a Constant's value).
Known read_tensor(const onnx::TensorProto& t, const std::string& where);
/// Pipeforge's dtype for an ONNX element type; nullopt when it has none.
std::optional<DType> dtype_of(int32_t onnx_type);
/// The layer an op belongs to from its node's name ("/h.0/attn/MatMul"
/// -> "h.0"): up to the first module-list index, else the first module.
std::string layer_of(const std::string& node_name);
/// The IR text of a number ("0.5", "-inf").
std::string number_text(double v);

// ---- The op table (onnx_ops.cpp).
struct OpRule {
  const char* onnx_op;
  /// Computes the outputs when the inputs are known (shapes, constants);
  /// returns false to leave the node to `translate`. May be null.
  bool (*fold)(Importer&);
  /// Writes the IR ops of the node. Null: only constants are accepted.
  void (*translate)(Importer&);
};
const std::vector<OpRule>& op_rules();
const OpRule* find_rule(const std::string& onnx_op);

// ---- Fusions (onnx_fusions.cpp): several nodes that make one IR op.
struct Fusion {
  std::string op;                    // "gelu", "gelu_erf", "layernorm", "rmsnorm", "silu"
  std::vector<std::string> inputs;   // ONNX values
  std::string output;                // the last node's output
  double eps = 0;
};
/// Finds GELU (both forms), decomposed layer and RMS norm and SiLU subgraphs: per node
/// index, the fusion anchored there (at its last node), and the other nodes
/// it absorbs.
struct Fusions {
  std::map<int, Fusion> at;
  std::set<int> absorbed;
};
Fusions find_fusions(const Importer& im);
void translate_fusion(Importer& im, const Fusion& f);

}  // namespace pf::onnx_import
