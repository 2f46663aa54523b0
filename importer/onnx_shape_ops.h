// The op table's translations of shape ops (onnx_shape_ops.cpp), and the
// helpers every translation shares.
#pragma once

#include <cstdint>
#include <string>

#include "importer/import_context.h"

namespace pf::onnx_import {

void translate_reshape(Importer& im);
void translate_flatten(Importer& im);
void translate_unsqueeze(Importer& im);
void translate_squeeze(Importer& im);
void translate_split(Importer& im);
void translate_concat(Importer& im);
void translate_slice(Importer& im);
void translate_gather(Importer& im);

/// The name of the node's first output.
const std::string& out0(Importer& im);
/// `d` as a number; fails the node when it is symbolic (`what` names it).
int64_t numeric(Importer& im, const SymDim& d, const char* what);

}  // namespace pf::onnx_import
