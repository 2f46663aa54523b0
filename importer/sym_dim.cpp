// Products of an integer and symbols.
#include "importer/sym_dim.h"

#include <algorithm>

namespace pf::onnx_import {

SymDim SymDim::of(int64_t value) { return SymDim{value, {}}; }

SymDim SymDim::named(std::string symbol) { return SymDim{1, {std::move(symbol)}}; }

std::string SymDim::str() const {
  if (symbols.empty()) return std::to_string(coef);
  std::string out = coef == 1 ? "" : std::to_string(coef) + "*";
  for (size_t i = 0; i < symbols.size(); ++i) out.append(i ? "*" : "").append(symbols[i]);
  return out;
}

SymDim operator*(const SymDim& a, const SymDim& b) {
  SymDim out{a.coef * b.coef, a.symbols};
  out.symbols.insert(out.symbols.end(), b.symbols.begin(), b.symbols.end());
  std::sort(out.symbols.begin(), out.symbols.end());
  if (out.coef == 0) out.symbols.clear();
  return out;
}

std::optional<SymDim> divide(const SymDim& a, const SymDim& b) {
  if (b.coef == 0 || a.coef % b.coef != 0) return std::nullopt;
  SymDim out{a.coef / b.coef, a.symbols};
  for (const std::string& s : b.symbols) {
    auto it = std::find(out.symbols.begin(), out.symbols.end(), s);
    if (it == out.symbols.end()) return std::nullopt;
    out.symbols.erase(it);
  }
  return out;
}

std::optional<SymDim> add(const SymDim& a, const SymDim& b, int64_t sign) {
  if (a.symbols != b.symbols && !(a.coef == 0 || b.coef == 0)) return std::nullopt;
  if (a.coef == 0) return SymDim{sign * b.coef, b.symbols};
  if (b.coef == 0) return a;
  SymDim out{a.coef + sign * b.coef, a.symbols};
  if (out.coef == 0) out.symbols.clear();
  return out;
}

SymDim product(const SymShape& dims) {
  SymDim out = SymDim::of(1);
  for (const SymDim& d : dims) out = out * d;
  return out;
}

std::string shape_text(const SymShape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out.append(i ? "," : "").append(shape[i].str());
  return out + "]";
}

}  // namespace pf::onnx_import
