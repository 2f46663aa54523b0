// Folding: nodes whose inputs are known when importing (shapes read off
// tensors, constants, index arithmetic) are computed here instead of
// becoming IR ops. This is how a PyTorch export's run-time shape
// computations (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) turn
// into the fixed or symbolic shapes the IR writes.
#include "importer/onnx_constants.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "ir/diagnostic.h"

namespace pf::onnx_import {

using onnx::TensorProto;

namespace {

std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

/// The numbers of a known integer value; false when one is symbolic.
bool numbers(const Known& k, std::vector<int64_t>& out) {
  out.clear();
  for (const SymDim& d : k.ints) {
    if (!d.is_number()) return false;
    out.push_back(d.coef);
  }
  return !k.is_real();
}

/// Copies element `from` of `src` to the end of `dst`.
void take(const Known& src, int64_t from, Known& dst) {
  if (src.is_real())
    dst.reals.push_back(src.reals[static_cast<size_t>(from)]);
  else
    dst.ints.push_back(src.ints[static_cast<size_t>(from)]);
}

/// Applies `f` elementwise over the broadcast of known values `a` and `b`.
bool elementwise(Importer& im, const Known& a, const Known& b, int32_t out_type,
                 const std::function<bool(const Known&, int64_t, const Known&, int64_t, Known&)>& f) {
  const size_t rank = std::max(a.shape.size(), b.shape.size());
  std::vector<int64_t> shape(rank);
  auto dim = [&](const Known& k, size_t i) -> int64_t {
    const size_t off = rank - k.shape.size();
    return i < off ? 1 : k.shape[i - off];
  };
  for (size_t i = 0; i < rank; ++i) {
    const int64_t x = dim(a, i), y = dim(b, i);
    if (x != y && x != 1 && y != 1) im.fail(fmt::format("shapes {} and {} do not broadcast", shape_str(a.shape),
                                                        shape_str(b.shape)));
    shape[i] = std::max(x, y);
  }
  Known out;
  out.type = out_type;
  out.shape = shape;
  const std::vector<int64_t> st = strides_of(shape);
  const int64_t n = out.size();
  for (int64_t flat = 0; flat < n; ++flat) {
    int64_t ia = 0, ib = 0, ma = 1, mb = 1;
    for (size_t i = rank; i-- > 0;) {
      const int64_t idx = flat / st[i] % shape[i];
      if (dim(a, i) != 1) ia += idx * ma;
      if (dim(b, i) != 1) ib += idx * mb;
      ma *= dim(a, i);
      mb *= dim(b, i);
    }
    if (!f(a, ia, b, ib, out)) return false;
  }
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool all_known(Importer& im) {
  for (int i = 0; i < im.node().input_size(); ++i)
    if (im.has_input(i) && !im.is_known(im.node().input(i))) return false;
  return true;
}

}  // namespace

int64_t normalize_axis(Importer& im, int64_t axis, size_t rank) {
  const auto r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= std::max<int64_t>(r, 1)) im.fail(fmt::format("axis {} is out of range for rank {}", axis, r));
  return axis < 0 ? axis + r : axis;
}

namespace {
bool arithmetic(Importer& im, char op) {
  if (!all_known(im)) return false;
  const Known& a = *im.known(im.node().input(0));
  const Known& b = *im.known(im.node().input(1));
  const bool real = a.is_real() || b.is_real();
  return elementwise(im, a, b, real ? TensorProto::FLOAT : a.type,
                     [&](const Known& x, int64_t i, const Known& y, int64_t j, Known& out) {
                       if (real) {
                         const double p = x.is_real() ? x.reals[i] : static_cast<double>(x.ints[i].coef);
                         const double q = y.is_real() ? y.reals[j] : static_cast<double>(y.ints[j].coef);
                         if ((!x.is_real() && !x.ints[i].is_number()) || (!y.is_real() && !y.ints[j].is_number()))
                           return false;
                         out.reals.push_back(op == '+' ? p + q : op == '-' ? p - q : op == '*' ? p * q : p / q);
                         return true;
                       }
                       const SymDim& p = x.ints[static_cast<size_t>(i)];
                       const SymDim& q = y.ints[static_cast<size_t>(j)];
                       std::optional<SymDim> r;
                       if (op == '*') r = p * q;
                       if (op == '+' || op == '-') r = add(p, q, op == '+' ? 1 : -1);
                       if (op == '/') {
                         if (p.is_number() && q.is_number() && q.coef != 0) {
                           // Integer division in ONNX rounds toward negative infinity.
                           int64_t d = p.coef / q.coef;
                           if ((p.coef % q.coef != 0) && ((p.coef < 0) != (q.coef < 0))) d -= 1;
                           r = SymDim::of(d);
                         } else {
                           r = divide(p, q);
                         }
                       }
                       if (!r) return false;
                       out.ints.push_back(*r);
                       return true;
                     });
}

}  // namespace

bool fold_constant(Importer& im) {
  const onnx::NodeProto& n = im.node();
  for (const onnx::AttributeProto& a : n.attribute()) {
    Known k;
    if (a.name() == "value") {
      k = read_tensor(a.t(), fmt::format("node '{}'", n.name()));
    } else if (a.name() == "value_float") {
      k.type = TensorProto::FLOAT;
      k.reals = {a.f()};
    } else if (a.name() == "value_int") {
      k.ints = {SymDim::of(a.i())};
    } else if (a.name() == "value_floats") {
      k.type = TensorProto::FLOAT;
      k.shape = {a.floats_size()};
      k.reals.assign(a.floats().begin(), a.floats().end());
    } else if (a.name() == "value_ints") {
      k.shape = {a.ints_size()};
      for (int64_t v : a.ints()) k.ints.push_back(SymDim::of(v));
    } else {
      continue;
    }
    im.set(n.output(0), std::move(k));
    return true;
  }
  im.fail("a Constant without a value");
}

bool fold_shape(Importer& im) {
  const std::string& in = im.node().input(0);
  Known k;
  std::vector<SymDim> dims;
  if (const Known* c = im.known(in)) {
    for (int64_t d : c->shape) dims.push_back(SymDim::of(d));
  } else {
    dims = im.tensor(in).shape;
  }
  const auto rank = static_cast<int64_t>(dims.size());
  int64_t start = im.int_attr("start", 0), end = im.int_attr("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  k.shape = {end - start};
  k.ints.assign(dims.begin() + start, dims.begin() + end);
  im.set(im.node().output(0), std::move(k));
  return true;
}

bool fold_gather(Importer& im) {
  if (!all_known(im)) return false;
  const Known& data = *im.known(im.node().input(0));
  const Known& idx = *im.known(im.node().input(1));
  std::vector<int64_t> at;
  if (!numbers(idx, at)) return false;
  const int64_t axis = normalize_axis(im, im.int_attr("axis", 0), data.shape.size());
  const int64_t n = data.shape.at(static_cast<size_t>(axis));
  Known out;
  out.type = data.type;
  for (int64_t d = 0; d < axis; ++d) out.shape.push_back(data.shape[static_cast<size_t>(d)]);
  out.shape.insert(out.shape.end(), idx.shape.begin(), idx.shape.end());
  for (size_t d = static_cast<size_t>(axis) + 1; d < data.shape.size(); ++d) out.shape.push_back(data.shape[d]);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= data.shape[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(axis) + 1; d < data.shape.size(); ++d) inner *= data.shape[d];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i : at) {
      const int64_t row = i < 0 ? i + n : i;
      if (row < 0 || row >= n) im.fail(fmt::format("index {} is out of range [0, {})", i, n));
      for (int64_t e = 0; e < inner; ++e) take(data, (o * n + row) * inner + e, out);
    }
  im.set(im.node().output(0), std::move(out));
  return true;
}

/// The axes of Squeeze / Unsqueeze / a reduction: the attribute (before
/// opset 13) or the second input.
std::optional<std::vector<int64_t>> axes_of(Importer& im) {
  if (auto a = im.ints_attr("axes")) return a;
  if (!im.has_input(1)) return std::nullopt;
  std::vector<int64_t> v;
  if (!numbers(im.known_input(1, "the axes"), v)) im.fail("the axes are not numbers");
  return v;
}

bool fold_unsqueeze(Importer& im) {
  if (!im.is_known(im.node().input(0))) return false;
  Known k = *im.known(im.node().input(0));
  const std::optional<std::vector<int64_t>> axes = unsqueezed_axes(im, k.shape.size());
  std::vector<int64_t> shape = k.shape;
  for (int64_t a : *axes) shape.insert(shape.begin() + a, 1);
  k.shape = shape;
  im.set(im.node().output(0), std::move(k));
  return true;
}

bool fold_squeeze(Importer& im) {
  if (!im.is_known(im.node().input(0))) return false;
  Known k = *im.known(im.node().input(0));
  k.shape = squeezed_shape(im, k.shape);
  im.set(im.node().output(0), std::move(k));
  return true;
}

bool fold_concat(Importer& im) {
  if (!all_known(im)) return false;
  std::vector<const Known*> parts;
  for (const std::string& in : im.node().input()) parts.push_back(im.known(in));
  const size_t rank = parts.front()->shape.size();
  const int64_t axis = normalize_axis(im, im.int_attr("axis", 0), rank);
  Known out;
  out.type = parts.front()->type;
  out.shape = parts.front()->shape;
  out.shape[static_cast<size_t>(axis)] = 0;
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out.shape[static_cast<size_t>(d)];
  for (const Known* p : parts) {
    if (p->shape.size() != rank || p->is_real() != out.is_real()) return false;
    out.shape[static_cast<size_t>(axis)] += p->shape[static_cast<size_t>(axis)];
  }
  for (int64_t o = 0; o < outer; ++o)
    for (const Known* p : parts) {
      const int64_t chunk = p->size() / std::max<int64_t>(outer, 1);
      for (int64_t e = 0; e < chunk; ++e) take(*p, o * chunk + e, out);
    }
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool fold_slice(Importer& im) {
  if (!all_known(im)) return false;
  const Known& data = *im.known(im.node().input(0));
  const SliceRanges r = slice_ranges(im, data.shape.size());
  std::vector<int64_t> begin(data.shape.size(), 0), shape = data.shape;
  for (const SliceRange& s : r) {
    if (!s.start.is_number() || !s.end.is_number()) return false;
    const int64_t dim = data.shape[static_cast<size_t>(s.axis)];
    int64_t b = s.start.coef, e = s.end.coef;
    if (b < 0) b += dim;
    if (e < 0) e += dim;
    b = std::clamp<int64_t>(b, 0, dim);
    e = std::clamp<int64_t>(e, b, dim);
    begin[static_cast<size_t>(s.axis)] = b;
    shape[static_cast<size_t>(s.axis)] = e - b;
  }
  Known out;
  out.type = data.type;
  out.shape = shape;
  const std::vector<int64_t> st = strides_of(data.shape), ost = strides_of(shape);
  for (int64_t flat = 0; flat < out.size(); ++flat) {
    int64_t from = 0;
    for (size_t d = 0; d < shape.size(); ++d) from += (flat / ost[d] % shape[d] + begin[d]) * st[d];
    take(data, from, out);
  }
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool fold_cast(Importer& im) {
  if (!all_known(im)) return false;
  Known k = *im.known(im.node().input(0));
  const auto to = static_cast<int32_t>(im.int_attr("to", TensorProto::FLOAT));
  Known out;
  out.type = to;
  out.shape = k.shape;
  const bool real = to == TensorProto::FLOAT || to == TensorProto::DOUBLE || to == TensorProto::FLOAT16 ||
                    to == TensorProto::BFLOAT16;
  if (real) {
    if (k.is_real()) {
      out.reals = k.reals;
    } else {
      std::vector<int64_t> v;
      if (!numbers(k, v)) return false;
      out.reals.assign(v.begin(), v.end());
    }
  } else if (k.is_real()) {
    for (double v : k.reals) out.ints.push_back(SymDim::of(to == TensorProto::BOOL ? v != 0 : static_cast<int64_t>(v)));
  } else {
    out.ints = k.ints;
    if (to == TensorProto::BOOL)
      for (SymDim& d : out.ints)
        if (d.is_number()) d = SymDim::of(d.coef != 0);
  }
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool fold_not(Importer& im) {
  if (!all_known(im)) return false;
  Known k = *im.known(im.node().input(0));
  for (SymDim& d : k.ints) d = SymDim::of(d.coef == 0);
  im.set(im.node().output(0), std::move(k));
  return true;
}

bool fold_equal(Importer& im) {
  if (!all_known(im)) return false;
  const Known& a = *im.known(im.node().input(0));
  const Known& b = *im.known(im.node().input(1));
  return elementwise(im, a, b, TensorProto::BOOL, [](const Known& x, int64_t i, const Known& y, int64_t j, Known& out) {
    if (x.is_real() || y.is_real()) {
      const double p = x.is_real() ? x.reals[i] : static_cast<double>(x.ints[i].coef);
      const double q = y.is_real() ? y.reals[j] : static_cast<double>(y.ints[j].coef);
      out.ints.push_back(SymDim::of(p == q));
      return true;
    }
    out.ints.push_back(SymDim::of(x.ints[i] == y.ints[j]));
    return true;
  });
}

bool fold_where(Importer& im) {
  if (!all_known(im)) return false;
  const Known& c = *im.known(im.node().input(0));
  const Known& a = *im.known(im.node().input(1));
  const Known& b = *im.known(im.node().input(2));
  if (c.shape != a.shape || a.shape != b.shape || a.is_real() != b.is_real()) return false;
  Known out;
  out.type = a.type;
  out.shape = a.shape;
  for (int64_t i = 0; i < c.size(); ++i) take(c.ints[static_cast<size_t>(i)].coef ? a : b, i, out);
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool fold_range(Importer& im) {
  if (!all_known(im)) return false;
  const auto s = im.known(im.node().input(0))->scalar(), l = im.known(im.node().input(1))->scalar(),
             d = im.known(im.node().input(2))->scalar();
  if (!s || !l || !d || *d == 0) return false;
  Known out;
  out.type = im.known(im.node().input(0))->type;
  const auto n = static_cast<int64_t>(std::max(0.0, std::ceil((*l - *s) / *d)));
  out.shape = {n};
  for (int64_t i = 0; i < n; ++i) {
    const double v = *s + static_cast<double>(i) * *d;
    if (out.is_real())
      out.reals.push_back(v);
    else
      out.ints.push_back(SymDim::of(static_cast<int64_t>(v)));
  }
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool fold_constant_of_shape(Importer& im) {
  if (!all_known(im)) return false;
  std::vector<int64_t> shape;
  if (!numbers(*im.known(im.node().input(0)), shape)) return false;
  Known value;
  value.type = TensorProto::FLOAT;
  value.reals = {0.0};
  for (const onnx::AttributeProto& a : im.node().attribute())
    if (a.name() == "value") value = read_tensor(a.t(), im.node().name());
  Known out;
  out.type = value.type;
  out.shape = shape;
  for (int64_t i = 0; i < out.size(); ++i) take(value, 0, out);
  im.set(im.node().output(0), std::move(out));
  return true;
}

bool fold_reshape(Importer& im) {
  if (!all_known(im)) return false;
  Known k = *im.known(im.node().input(0));
  SymShape from;
  for (int64_t d : k.shape) from.push_back(SymDim::of(d));
  const SymShape to = reshaped(im, from, im.known_input(1, "the shape"));
  k.shape.clear();
  for (const SymDim& d : to) k.shape.push_back(d.coef);
  im.set(im.node().output(0), std::move(k));
  return true;
}

bool fold_identity(Importer& im) {
  if (!all_known(im)) return false;
  im.set(im.node().output(0), *im.known(im.node().input(0)));
  return true;
}

namespace {
bool fold_unary(Importer& im, double (*f)(double)) {
  if (!all_known(im)) return false;
  Known k = *im.known(im.node().input(0));
  if (!k.is_real()) return false;
  for (double& v : k.reals) v = f(v);
  im.set(im.node().output(0), std::move(k));
  return true;
}

}  // namespace

bool fold_add(Importer& im) { return arithmetic(im, '+'); }
bool fold_sub(Importer& im) { return arithmetic(im, '-'); }
bool fold_mul(Importer& im) { return arithmetic(im, '*'); }
bool fold_div(Importer& im) { return arithmetic(im, '/'); }
bool fold_sqrt(Importer& im) { return fold_unary(im, [](double v) { return std::sqrt(v); }); }
bool fold_neg(Importer& im) { return fold_unary(im, [](double v) { return -v; }); }
bool fold_reciprocal(Importer& im) { return fold_unary(im, [](double v) { return 1.0 / v; }); }

std::optional<std::vector<int64_t>> unsqueezed_axes(Importer& im, size_t rank) {
  std::optional<std::vector<int64_t>> axes = axes_of(im);
  if (!axes) im.fail("Unsqueeze without axes");
  const auto out_rank = static_cast<int64_t>(rank + axes->size());
  for (int64_t& a : *axes) a = a < 0 ? a + out_rank : a;
  std::sort(axes->begin(), axes->end());
  return axes;
}

std::vector<int64_t> squeezed_shape(Importer& im, const std::vector<int64_t>& shape) {
  std::optional<std::vector<int64_t>> axes = axes_of(im);
  std::vector<int64_t> out;
  for (size_t d = 0; d < shape.size(); ++d) {
    const bool listed = axes && std::any_of(axes->begin(), axes->end(), [&](int64_t a) {
                          return normalize_axis(im, a, shape.size()) == static_cast<int64_t>(d);
                        });
    if (listed || (!axes && shape[d] == 1)) {
      if (shape[d] != 1) im.fail(fmt::format("cannot squeeze axis {} of size {}", d, shape[d]));
      continue;
    }
    out.push_back(shape[d]);
  }
  return out;
}

SliceRanges slice_ranges(Importer& im, size_t rank) {
  const Known& starts = im.known_input(1, "the starts");
  const Known& ends = im.known_input(2, "the ends");
  std::vector<int64_t> axes, steps;
  if (im.has_input(3)) {
    if (!numbers(im.known_input(3, "the axes"), axes)) im.fail("the axes are not numbers");
  } else {
    for (size_t i = 0; i < starts.ints.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (im.has_input(4) && !numbers(im.known_input(4, "the steps"), steps)) im.fail("the steps are not numbers");
  SliceRanges out;
  for (size_t i = 0; i < axes.size(); ++i) {
    if (!steps.empty() && steps[i] != 1) im.fail(fmt::format("a step of {} (only 1 is supported)", steps[i]));
    out.push_back({normalize_axis(im, axes[i], rank), starts.ints.at(i), ends.ints.at(i)});
  }
  return out;
}

SymShape reshaped(Importer& im, const SymShape& from, const Known& shape) {
  if (shape.is_real()) im.fail("the shape is not integers");
  SymShape to;
  int infer = -1;
  for (size_t i = 0; i < shape.ints.size(); ++i) {
    const SymDim& d = shape.ints[i];
    if (d == SymDim::of(-1)) {
      if (infer >= 0) im.fail("two -1 entries in the shape");
      infer = static_cast<int>(i);
      to.push_back(SymDim::of(1));
    } else if (d == SymDim::of(0) && im.int_attr("allowzero", 0) == 0) {
      if (i >= from.size()) im.fail("a 0 in the shape past the input's rank");
      to.push_back(from[i]);
    } else {
      to.push_back(d);
    }
  }
  if (infer >= 0) {
    const std::optional<SymDim> rest = divide(product(from), product(to));
    if (!rest)
      im.fail(fmt::format("cannot infer the -1 of the shape: {} elements into {}", product(from).str(),
                          shape_text(to)));
    to[static_cast<size_t>(infer)] = *rest;
  }
  return to;
}

}  // namespace pf::onnx_import
