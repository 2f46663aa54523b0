// Parameter pieces in the IR.
#include "ir/param_piece.h"

namespace pf {

TensorType ParamPiece::whole_type(const TensorType& piece) const {
  TensorType type = piece;
  type.shape.at(0) = whole_rows;
  return type;
}

std::optional<ParamPiece> param_piece(const Op& op) {
  const Attr* of = op.attr("piece_of");
  if (op.kind != OpKind::param || of == nullptr) return std::nullopt;
  const Attr* rows = op.attr("rows");
  const Attr* whole_rows = op.attr("whole_rows");
  if (rows == nullptr || whole_rows == nullptr || rows->dims.size() != 2 || !rows->dims[0].is_constant() ||
      !rows->dims[1].is_constant() || !whole_rows->dim.is_constant())
    throw Error("a parameter piece needs piece_of, rows=[begin,end] and whole_rows, all constant");
  return ParamPiece{of->string, rows->dims[0].constant(), rows->dims[1].constant(), whole_rows->dim.constant()};
}

void set_param_piece(Op& op, const ParamPiece& piece) {
  op.set_attr("piece_of", Attr::of_string(piece.whole));
  op.set_attr("rows", Attr::of_dims({DimExpr(piece.begin), DimExpr(piece.end)}));
  op.set_attr("whole_rows", Attr::of_dim(DimExpr(piece.whole_rows)));
}

}  // namespace pf
