// The shape ops of the op table on data that is not known while importing:
// reshapes, squeezes, splits, concatenation, slices and gathers become IR.
#include "importer/onnx_shape_ops.h"

#include <fmt/format.h>

#include <algorithm>

#include "importer/onnx_constants.h"

namespace pf::onnx_import {

const std::string& out0(Importer& im) { return im.node().output(0); }

int64_t numeric(Importer& im, const SymDim& d, const char* what) {
  if (!d.is_number()) im.fail(fmt::format("{} is symbolic ({}); it must be a fixed size", what, d.str()));
  return d.coef;
}

namespace {

void reshape_to(Importer& im, const Tensor& x, const SymShape& to) {
  if (to == x.shape) return im.alias(out0(im), x);
  if (!(product(to) == product(x.shape)))
    im.fail(fmt::format("cannot reshape {} into {}", shape_text(x.shape), shape_text(to)));
  im.emit(out0(im), fmt::format("reshape %{} shape={}", x.name, shape_text(to)), x.dtype, to);
}

}  // namespace

void translate_reshape(Importer& im) {
  const Tensor x = im.input(0);
  reshape_to(im, x, reshaped(im, x.shape, im.known_input(1, "the shape")));
}

void translate_flatten(Importer& im) {
  const Tensor x = im.input(0);
  const int64_t axis = normalize_axis(im, im.int_attr("axis", 1), x.shape.size() + 1);
  const SymShape lead(x.shape.begin(), x.shape.begin() + axis), rest(x.shape.begin() + axis, x.shape.end());
  reshape_to(im, x, {product(lead), product(rest)});
}

void translate_unsqueeze(Importer& im) {
  const Tensor x = im.input(0);
  SymShape to = x.shape;
  const std::vector<int64_t> axes = unsqueezed_axes(im, x.shape.size()).value();
  for (int64_t a : axes) to.insert(to.begin() + a, SymDim::of(1));
  reshape_to(im, x, to);
}

void translate_squeeze(Importer& im) {
  const Tensor x = im.input(0);
  std::vector<int64_t> numbers;
  for (const SymDim& d : x.shape) numbers.push_back(d.is_number() ? d.coef : -2);  // symbols are never 1
  std::vector<int64_t> kept = squeezed_shape(im, numbers);
  SymShape to;
  size_t k = 0;
  for (const SymDim& d : x.shape)
    if (k < kept.size() && (d.is_number() ? d.coef : -2) == kept[k]) {
      to.push_back(d);
      ++k;
    }
  reshape_to(im, x, to);
}

void translate_split(Importer& im) {
  const Tensor x = im.input(0);
  const int64_t axis = normalize_axis(im, im.int_attr("axis", 0), x.shape.size());
  std::vector<SymDim> sizes;
  if (im.has_input(1)) {
    sizes = im.known_input(1, "the split sizes").ints;
  } else if (auto a = im.ints_attr("split")) {
    for (int64_t v : *a) sizes.push_back(SymDim::of(v));
  } else {
    const std::optional<SymDim> each = divide(x.shape[static_cast<size_t>(axis)], SymDim::of(im.node().output_size()));
    if (!each) im.fail("the axis does not split evenly into the outputs");
    sizes.assign(static_cast<size_t>(im.node().output_size()), *each);
  }
  std::vector<std::string> outs(im.node().output().begin(), im.node().output().end());
  std::vector<SymShape> shapes;
  std::string text;
  for (const SymDim& s : sizes) {
    SymShape shape = x.shape;
    shape[static_cast<size_t>(axis)] = s;
    shapes.push_back(shape);
    if (!text.empty()) text += ',';
    text += s.str();
  }
  im.emit_many(outs, fmt::format("split %{} axis={} sizes=[{}]", x.name, axis, text), x.dtype, shapes);
}

void translate_concat(Importer& im) {
  std::vector<Tensor> parts;
  for (int i = 0; i < im.node().input_size(); ++i) parts.push_back(im.input(i));
  const int64_t axis = normalize_axis(im, im.int_attr("axis", 0), parts.front().shape.size());
  SymShape shape = parts.front().shape;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::optional<SymDim> sum = add(shape[static_cast<size_t>(axis)], parts[i].shape[static_cast<size_t>(axis)]);
    if (!sum) im.fail("cannot add the concatenated sizes");
    shape[static_cast<size_t>(axis)] = *sum;
  }
  im.emit(out0(im), fmt::format("concat {} axis={}", Importer::operands(parts), axis), parts.front().dtype, shape);
}

void translate_slice(Importer& im) {
  Tensor x = im.input(0);
  const SliceRanges ranges = slice_ranges(im, x.shape.size());
  std::vector<std::pair<int64_t, std::pair<SymDim, SymDim>>> cuts;
  for (const SliceRange& r : ranges) {
    const SymDim& dim = x.shape[static_cast<size_t>(r.axis)];
    SymDim start = r.start, end = r.end;
    auto from_end = [&](SymDim& v) {
      if (v.is_number() && v.coef < 0) v = SymDim::of(numeric(im, dim, "a dimension sliced from its end") + v.coef);
    };
    from_end(start);
    from_end(end);
    if (end.is_number() && end.coef >= std::numeric_limits<int32_t>::max()) end = dim;
    if (start.is_number() && dim.is_number()) start = SymDim::of(std::clamp<int64_t>(start.coef, 0, dim.coef));
    if (end.is_number() && dim.is_number()) end = SymDim::of(std::clamp<int64_t>(end.coef, 0, dim.coef));
    if (start == SymDim::of(0) && end == dim) continue;
    cuts.push_back({r.axis, {start, end}});
  }
  if (cuts.empty()) return im.alias(out0(im), x);
  for (size_t i = 0; i < cuts.size(); ++i) {
    const auto& [axis, range] = cuts[i];
    const std::optional<SymDim> size = add(range.second, range.first, -1);
    if (!size) im.fail("cannot compute the sliced size");
    SymShape shape = x.shape;
    shape[static_cast<size_t>(axis)] = *size;
    x = im.emit(i + 1 == cuts.size() ? out0(im) : "",
                fmt::format("slice %{} axis={} start={} end={}", x.name, axis, range.first.str(), range.second.str()),
                x.dtype, shape);
  }
}

// Gather: rows of a table by a tensor of indices is an embedding; by known
// indices, a slice.
void translate_gather(Importer& im) {
  const Tensor data = im.input(0);
  const int64_t axis = normalize_axis(im, im.int_attr("axis", 0), data.shape.size());
  const std::string& indices = im.node().input(1);
  if (const Known* k = im.known(indices)) {
    std::vector<int64_t> at;
    for (const SymDim& d : k->ints) at.push_back(numeric(im, d, "an index"));
    const SymDim& dim = data.shape[static_cast<size_t>(axis)];
    for (int64_t& i : at)
      if (i < 0) i += numeric(im, dim, "the gathered axis");
    bool contiguous = !at.empty();
    for (size_t i = 1; i < at.size(); ++i) contiguous = contiguous && at[i] == at[i - 1] + 1;
    if (!contiguous || k->shape.size() > 1)
      im.fail("gathering known indices other than one index or a contiguous range is not supported");
    SymShape shape = data.shape;
    shape[static_cast<size_t>(axis)] = SymDim::of(static_cast<int64_t>(at.size()));
    const bool drop = k->shape.empty();
    Tensor sliced = im.emit(drop ? "" : out0(im),
                            fmt::format("slice %{} axis={} start={} end={}", data.name, axis, at.front(),
                                        at.back() + 1),
                            data.dtype, shape);
    if (drop) {
      shape.erase(shape.begin() + axis);
      reshape_to(im, sliced, shape);
    }
    return;
  }
  const Tensor idx = im.input(1);
  if (axis != 0 || data.shape.size() != 2)
    im.fail("gathering by computed indices is translated only as an embedding: rows (axis 0) of a 2-D table");
  SymShape shape = idx.shape;
  shape.push_back(data.shape[1]);
  im.emit(out0(im), fmt::format("embedding {}", Importer::operands({data, idx})), data.dtype, shape);
}

}  // namespace pf::onnx_import
