// Op attributes: `axis=-1`, `shape=[B,T,H,C/H]`, `init=normal(0.02)`.
#pragma once

#include <string>
#include <vector>

#include "ir/dim_expr.h"
#include "ir/dtype.h"

namespace pf {

/// The kinds an attribute can have. The op table fixes the kind of each
/// attribute, so the parser reads a value by what the op expects.
enum class AttrKind : uint8_t { dim, dims, real, boolean, string, init, dtype };

/// A parameter initializer: `zeros`, `ones`, `normal(0.02)`, `uniform(-1,1)`,
/// `xavier`, `kaiming`.
struct Init {
  enum class Kind : uint8_t { zeros, ones, normal, uniform, xavier, kaiming };
  Kind kind = Kind::zeros;
  std::vector<double> args;

  std::string str() const;
  bool operator==(const Init&) const = default;
};

/// Parses an initializer name; returns false for an unknown one. The number of
/// arguments each kind takes is `init_arity`.
bool parse_init_kind(std::string_view name, Init::Kind* kind);
int init_arity(Init::Kind kind);

struct Attr {
  AttrKind kind = AttrKind::dim;
  DimExpr dim;                 // dim
  std::vector<DimExpr> dims;   // dims
  double real = 0;             // real
  bool boolean = false;        // boolean
  std::string string;          // string
  Init init;                   // init
  DType dtype = DType::f32;    // dtype

  static Attr of_dim(DimExpr d);
  static Attr of_dims(std::vector<DimExpr> d);
  static Attr of_real(double v);
  static Attr of_bool(bool v);
  static Attr of_string(std::string s);
  static Attr of_init(Init i);
  static Attr of_dtype(DType t);

  /// Canonical text of the value (what follows `name=`).
  std::string str() const;
  bool operator==(const Attr& other) const;
};

/// The canonical spelling of a double: shortest round-trip digits, `inf`,
/// `-inf`, `nan`, exponent without padding (`1e-5`).
std::string format_real(double v);
/// A string literal with quotes and escapes.
std::string quote(const std::string& s);

}  // namespace pf
