// A parameter declared as a block of a whole one. When a product by a weight
// is split between two pipeline stages, each stage holds its rows of that
// weight as a parameter of its own; under tensor parallelism each rank of a
// stage holds its columns (or rows) of each shared weight. The pieces start
// from the whole weight's initial values and are saved and loaded as that
// weight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "ir/module.h"

namespace pf {

/// Where rank `rank`'s part of `n` elements begins when a group of `degree`
/// cuts them: n * rank / degree, so that parts differ by one at most (and
/// are n / degree each when that divides). Its part ends where rank + 1's
/// begins.
inline int64_t part_begin(int64_t n, int64_t degree, int64_t rank) { return n * rank / degree; }

/// The axis a value of `rank` dimensions holds its tokens on under sequence
/// parallelism: the one before the features ([B, T, C]: T; [N, C]: N).
inline int token_axis(int rank) { return rank - 2; }

/// Whether sequence parallelism can cut a value of `type` into the parts of
/// the tokens of `degree` ranks: a float with a token axis each rank gets a
/// part of. Such values are also what stages hand on in parts.
bool cuts_into_token_parts(const TensorType& type, int degree);

/// Whether an operand of `operand` type spans the tokens of an elementwise
/// result of `result` type (rather than broadcasting over them), so that a
/// rank reads its part of it.
bool spans_tokens(const TensorType& operand, const TensorType& result);

/// Rank `rank`'s part of the tokens of a value of `type` (part_begin).
TensorType token_part_type(TensorType type, int degree, int rank);

/// Along `axis`, the whole's `whole_rows` indices fall into `segments` equal
/// blocks (three where one product computes q, k and v side by side), and
/// the piece holds indices [begin, end) of every block, blocks in order.
/// Rows of a 2-D weight are axis 0, its columns axis 1.
struct ParamPiece {
  std::string whole;       // the whole parameter's name (its key in weights files)
  int64_t begin = 0;       // within each segment
  int64_t end = 0;
  int64_t whole_rows = 0;  // the whole parameter's size along `axis`
  int axis = 0;
  int64_t segments = 1;

  /// The whole parameter's type, from a piece's.
  TensorType whole_type(const TensorType& piece) const;
  /// The piece's size along its axis: (end - begin) per segment.
  int64_t size() const { return (end - begin) * segments; }
  /// The fraction of the whole the piece holds.
  double share() const { return static_cast<double>(size()) / static_cast<double>(whole_rows); }
  /// Copies the piece's elements out of the whole's (`piece` is the piece's
  /// type; elements of `element_bytes`), and back into the whole's place.
  void cut(const TensorType& piece, const std::byte* whole_data, std::byte* piece_data, size_t element_bytes) const;
  void place(const TensorType& piece, const std::byte* piece_data, std::byte* whole_data, size_t element_bytes) const;
  /// What the piece holds, for messages: "rows [0, 2)", "columns [0, 64)",
  /// "columns [0, 64) of each of 3 blocks", "[0, 2) along axis 2".
  std::string str() const;
  bool operator==(const ParamPiece&) const = default;
};

/// The piece a `param` op declares (attributes piece_of, rows, whole_rows,
/// and axis and segments where they are not 0 and 1), or nullopt for a
/// whole parameter. The verifier has checked the values.
std::optional<ParamPiece> param_piece(const Op& op);

/// Writes `piece` into a `param` op's attributes.
void set_param_piece(Op& op, const ParamPiece& piece);

}  // namespace pf
