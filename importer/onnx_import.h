// ONNX models (PyTorch's torch.onnx.export, training mode, opsets 13-17) as
// Pipeforge IR text plus the weights of their parameters.
#pragma once

#include <string>
#include <vector>

#include "ir/dim_expr.h"
#include "ir/types.h"

namespace pf {

struct OnnxImportOptions {
  /// The loss to append when the export ends at the model's output:
  /// "" (none), "cross_entropy:TARGET" (class indices, an i32 input named
  /// TARGET with the output's shape but its last axis) or "mse[:TARGET]"
  /// (an f32 input shaped like the output; TARGET defaults to "target").
  std::string loss;
  /// The symbolic dimension that is the batch; the IR takes the batch from
  /// the first input's leading dimension, so the inputs are reordered to
  /// lead with one that has it. Given for an export with fixed shapes, the
  /// first input's leading size becomes a dimension of this name.
  std::string batch_dim;
  /// Values of the symbolic dimensions in the `dim` declarations (others: 1).
  DimBinding bind;
};

/// A parameter's initial value, by its ONNX initializer's name (PyTorch's
/// state_dict name).
struct ImportedWeight {
  std::string name;
  TensorType type;
  std::vector<float> values;
};

struct OnnxImport {
  std::string ir;                       ///< the model as IR text, verified
  std::vector<ImportedWeight> weights;  ///< of every parameter the IR declares
};

/// Reads the ONNX file at `path` and translates it. Throws Error naming the
/// file and, for a node it cannot translate, the node (its name, index and
/// op type) and what would make it work; nothing is returned then.
OnnxImport import_onnx(const std::string& path, const OnnxImportOptions& options = {});

/// The ONNX op types the importer translates, sorted.
std::vector<std::string> supported_onnx_ops();

}  // namespace pf
