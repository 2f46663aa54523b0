// Weights files and checkpoints hold a parameter whole even where a plan
// splits it into pieces between stages (ParamPiece): pieces are joined into
// their whole when a file is written and cut out of it when one is read, so
// files move freely between plans, whatever they split.
#pragma once

#include <map>
#include <string>

#include "ir/param_piece.h"
#include "plan/plan.h"
#include "runtime/safetensors.h"

namespace pf {

/// A piece and its own type.
struct PieceOfParameter {
  ParamPiece piece;
  TensorType type;
};
using ParameterPieces = std::map<std::string, PieceOfParameter>;  // by the piece's name

/// Every piece of every stage of `plan` (of every rank's part of a
/// tensor-parallel stage).
ParameterPieces plan_pieces(const Plan& plan);

/// Replaces each piece's tensors in `file` (the piece's own, and a tensor
/// named after it with a suffix, as an optimizer's "<piece>.exp_avg") by
/// the whole's ("<whole>", "<whole>.exp_avg") where every row of the whole
/// is there; pieces whose companions are missing stay as they are.
void join_pieces(SafeTensors& file, const ParameterPieces& pieces);

/// Replaces the wholes in `file` by the pieces the plan holds of them, each
/// cut from the whole's rows (the inverse of join_pieces): no stage of such
/// a plan holds the whole. A whole of another shape is an error.
void cut_pieces(SafeTensors& file, const ParameterPieces& pieces);

/// `pieces` as text for a checkpoint's index, and back, without their types
/// (join_pieces reads them off the tensors); the reader throws pf::Error
/// naming `what` on text it did not write.
std::string pieces_to_text(const ParameterPieces& pieces);
ParameterPieces pieces_from_text(const std::string& text, const std::string& what);

}  // namespace pf
