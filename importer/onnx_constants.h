// Computing, while importing, the nodes whose inputs are known: shapes,
// constants and index arithmetic (see onnx_constants.cpp), and the shape
// helpers the op table shares with them.
#pragma once

#include <optional>
#include <vector>

#include "importer/import_context.h"

namespace pf::onnx_import {

// Each computes the node's outputs and returns true when it can (its inputs
// known); false leaves the node to the op table's translation.
bool fold_constant(Importer& im);
bool fold_shape(Importer& im);
bool fold_gather(Importer& im);
bool fold_unsqueeze(Importer& im);
bool fold_squeeze(Importer& im);
bool fold_concat(Importer& im);
bool fold_slice(Importer& im);
bool fold_cast(Importer& im);
bool fold_add(Importer& im);
bool fold_sub(Importer& im);
bool fold_mul(Importer& im);
bool fold_div(Importer& im);
bool fold_not(Importer& im);
bool fold_equal(Importer& im);
bool fold_where(Importer& im);
bool fold_range(Importer& im);
bool fold_constant_of_shape(Importer& im);
bool fold_reshape(Importer& im);
bool fold_identity(Importer& im);
bool fold_sqrt(Importer& im);
bool fold_neg(Importer& im);
bool fold_reciprocal(Importer& im);

/// `axis` in [0, rank); fails the node when out of range.
int64_t normalize_axis(Importer& im, int64_t axis, size_t rank);
/// The axes of the node (attribute, or its second input), if any.
std::optional<std::vector<int64_t>> axes_of(Importer& im);
/// Unsqueeze's axes for an input of `rank`, non-negative and sorted.
std::optional<std::vector<int64_t>> unsqueezed_axes(Importer& im, size_t rank);
/// Squeeze's output shape.
std::vector<int64_t> squeezed_shape(Importer& im, const std::vector<int64_t>& shape);

/// One axis of a Slice node, start and end as given (negative ones counted
/// from the end still; INT64_MAX for "to the end").
struct SliceRange {
  int64_t axis;
  SymDim start, end;
};
using SliceRanges = std::vector<SliceRange>;
SliceRanges slice_ranges(Importer& im, size_t rank);

/// Reshape's output shape for an input of shape `from` and the shape
/// input `shape` (0: keep that dimension, -1: what is left).
SymShape reshaped(Importer& im, const SymShape& from, const Known& shape);

}  // namespace pf::onnx_import
