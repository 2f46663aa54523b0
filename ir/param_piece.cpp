// Parameter pieces in the IR.
#include "ir/param_piece.h"

#include <fmt/format.h>

#include <cstring>

namespace pf {

namespace {

/// Walks the runs of bytes a piece shares with its whole: for every index
/// before the axis and every segment, one run of (end - begin) slices of
/// the axis. `copy(piece_offset, whole_offset, bytes)`.
template <class Copy>
void for_each_run(const ParamPiece& p, const TensorType& piece, size_t element_bytes, Copy copy) {
  int64_t outer = 1, inner = static_cast<int64_t>(element_bytes);
  for (int d = 0; d < p.axis; ++d) outer *= piece.shape.at(static_cast<size_t>(d));
  for (size_t d = static_cast<size_t>(p.axis) + 1; d < piece.shape.size(); ++d) inner *= piece.shape[d];
  const int64_t segment = p.whole_rows / p.segments, run = (p.end - p.begin) * inner;
  int64_t at = 0;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t s = 0; s < p.segments; ++s, at += run)
      copy(at, (o * p.whole_rows + s * segment + p.begin) * inner, run);
}

}  // namespace

bool cuts_into_token_parts(const TensorType& type, int degree) {
  return is_float(type.dtype) && type.rank() >= 2 &&
         type.shape[static_cast<size_t>(token_axis(type.rank()))] >= degree;
}

bool spans_tokens(const TensorType& operand, const TensorType& result) {
  if (operand.rank() < 2 || result.rank() < 2) return false;
  const int64_t tokens = operand.shape[static_cast<size_t>(token_axis(operand.rank()))];
  return tokens > 1 && tokens == result.shape[static_cast<size_t>(token_axis(result.rank()))];
}

TensorType token_part_type(TensorType type, int degree, int rank) {
  int64_t& tokens = type.shape[static_cast<size_t>(token_axis(type.rank()))];
  tokens = part_begin(tokens, degree, rank + 1) - part_begin(tokens, degree, rank);
  return type;
}

TensorType ParamPiece::whole_type(const TensorType& piece) const {
  TensorType type = piece;
  type.shape.at(static_cast<size_t>(axis)) = whole_rows;
  return type;
}

void ParamPiece::cut(const TensorType& piece, const std::byte* whole_data, std::byte* piece_data,
                     size_t element_bytes) const {
  for_each_run(*this, piece, element_bytes, [&](int64_t to, int64_t from, int64_t bytes) {
    std::memcpy(piece_data + to, whole_data + from, static_cast<size_t>(bytes));
  });
}

void ParamPiece::place(const TensorType& piece, const std::byte* piece_data, std::byte* whole_data,
                       size_t element_bytes) const {
  for_each_run(*this, piece, element_bytes, [&](int64_t from, int64_t to, int64_t bytes) {
    std::memcpy(whole_data + to, piece_data + from, static_cast<size_t>(bytes));
  });
}

std::string ParamPiece::str() const {
  const std::string range = fmt::format("[{}, {})", begin, end);
  std::string out = axis == 0   ? "rows " + range
                    : axis == 1 ? "columns " + range
                                : range + fmt::format(" along axis {}", axis);
  if (segments != 1) out += fmt::format(" of each of {} blocks", segments);
  return out;
}

std::optional<ParamPiece> param_piece(const Op& op) {
  const Attr* of = op.attr("piece_of");
  if (op.kind != OpKind::param || of == nullptr) return std::nullopt;
  const Attr* rows = op.attr("rows");
  const Attr* whole_rows = op.attr("whole_rows");
  const Attr* axis = op.attr("axis");
  const Attr* segments = op.attr("segments");
  if (rows == nullptr || whole_rows == nullptr || rows->dims.size() != 2 || !rows->dims[0].is_constant() ||
      !rows->dims[1].is_constant() || !whole_rows->dim.is_constant() || (axis && !axis->dim.is_constant()) ||
      (segments && !segments->dim.is_constant()))
    throw Error("a parameter piece needs piece_of, rows=[begin,end] and whole_rows, all constant");
  ParamPiece p{of->string, rows->dims[0].constant(), rows->dims[1].constant(), whole_rows->dim.constant()};
  if (axis) p.axis = static_cast<int>(axis->dim.constant());
  if (segments) p.segments = segments->dim.constant();
  return p;
}

void set_param_piece(Op& op, const ParamPiece& piece) {
  op.set_attr("piece_of", Attr::of_string(piece.whole));
  op.set_attr("rows", Attr::of_dims({DimExpr(piece.begin), DimExpr(piece.end)}));
  op.set_attr("whole_rows", Attr::of_dim(DimExpr(piece.whole_rows)));
  if (piece.axis != 0) op.set_attr("axis", Attr::of_dim(DimExpr(piece.axis)));
  if (piece.segments != 1) op.set_attr("segments", Attr::of_dim(DimExpr(piece.segments)));
}

}  // namespace pf
