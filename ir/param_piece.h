// A parameter declared as a block of rows of a whole one. When a product by
// a weight is split between two pipeline stages, each stage holds its rows
// of that weight as a parameter of its own; the pieces start from the whole
// weight's initial values and are saved and loaded as that weight.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ir/module.h"

namespace pf {

struct ParamPiece {
  std::string whole;       // the whole parameter's name (its key in weights files)
  int64_t begin = 0;       // the piece holds rows [begin, end) of it
  int64_t end = 0;
  int64_t whole_rows = 0;  // the whole parameter's first dimension

  /// The whole parameter's type, from a piece's.
  TensorType whole_type(const TensorType& piece) const;
  bool operator==(const ParamPiece&) const = default;
};

/// The piece a `param` op declares (attributes piece_of, rows, whole_rows),
/// or nullopt for a whole parameter. The verifier has checked the values.
std::optional<ParamPiece> param_piece(const Op& op);

/// Writes `piece` into a `param` op's attributes.
void set_param_piece(Op& op, const ParamPiece& piece);

}  // namespace pf
