// Op attributes.
#include "ir/attr.h"

#include <fmt/format.h>

#include <cmath>

namespace pf {

namespace {
struct InitRow {
  Init::Kind kind;
  std::string_view name;
  int arity;
};
constexpr InitRow kInits[] = {
    {Init::Kind::zeros, "zeros", 0},   {Init::Kind::ones, "ones", 0},
    {Init::Kind::normal, "normal", 1}, {Init::Kind::uniform, "uniform", 2},
    {Init::Kind::xavier, "xavier", 0}, {Init::Kind::kaiming, "kaiming", 0},
};
}  // namespace

bool parse_init_kind(std::string_view name, Init::Kind* kind) {
  for (const InitRow& row : kInits)
    if (row.name == name) {
      *kind = row.kind;
      return true;
    }
  return false;
}

int init_arity(Init::Kind kind) { return kInits[static_cast<int>(kind)].arity; }

std::string Init::str() const {
  std::string out(kInits[static_cast<int>(kind)].name);
  if (args.empty()) return out;
  out += '(';
  for (size_t i = 0; i < args.size(); ++i) {
    if (i) out += ',';
    out += format_real(args[i]);
  }
  return out + ')';
}

std::string format_real(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  std::string s = fmt::format("{}", v);
  // fmt writes 1e-05; strip the exponent's padding so the text reads as typed.
  size_t e = s.find('e');
  if (e != std::string::npos) {
    size_t digits = e + 1;
    if (digits < s.size() && (s[digits] == '-' || s[digits] == '+')) {
      if (s[digits] == '+') s.erase(digits, 1);
      else ++digits;
    }
    while (digits + 1 < s.size() && s[digits] == '0') s.erase(digits, 1);
  }
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

Attr Attr::of_dim(DimExpr d) {
  Attr a;
  a.kind = AttrKind::dim;
  a.dim = std::move(d);
  return a;
}
Attr Attr::of_dims(std::vector<DimExpr> d) {
  Attr a;
  a.kind = AttrKind::dims;
  a.dims = std::move(d);
  return a;
}
Attr Attr::of_real(double v) {
  Attr a;
  a.kind = AttrKind::real;
  a.real = v;
  return a;
}
Attr Attr::of_bool(bool v) {
  Attr a;
  a.kind = AttrKind::boolean;
  a.boolean = v;
  return a;
}
Attr Attr::of_string(std::string s) {
  Attr a;
  a.kind = AttrKind::string;
  a.string = std::move(s);
  return a;
}
Attr Attr::of_init(Init i) {
  Attr a;
  a.kind = AttrKind::init;
  a.init = std::move(i);
  return a;
}
Attr Attr::of_dtype(DType t) {
  Attr a;
  a.kind = AttrKind::dtype;
  a.dtype = t;
  return a;
}

std::string Attr::str() const {
  switch (kind) {
    case AttrKind::dim:
      return dim.str();
    case AttrKind::dims: {
      std::string out = "[";
      for (size_t i = 0; i < dims.size(); ++i) {
        if (i) out += ',';
        out += dims[i].str();
      }
      return out + "]";
    }
    case AttrKind::real:
      return format_real(real);
    case AttrKind::boolean:
      return boolean ? "true" : "false";
    case AttrKind::string:
      return quote(string);
    case AttrKind::init:
      return init.str();
    case AttrKind::dtype:
      return std::string(dtype_name(dtype));
  }
  return {};
}

bool Attr::operator==(const Attr& o) const {
  if (kind != o.kind) return false;
  switch (kind) {
    case AttrKind::dim:
      return dim == o.dim;
    case AttrKind::dims:
      return dims == o.dims;
    case AttrKind::real:
      return real == o.real || (std::isnan(real) && std::isnan(o.real));
    case AttrKind::boolean:
      return boolean == o.boolean;
    case AttrKind::string:
      return string == o.string;
    case AttrKind::init:
      return init == o.init;
    case AttrKind::dtype:
      return dtype == o.dtype;
  }
  return false;
}

}  // namespace pf
