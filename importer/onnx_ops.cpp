// The op table: how each ONNX op becomes IR, one row per op. A row's fold
// computes a node whose inputs are known (shapes, constants); its translate
// writes IR ops for a node that computes on data (the shape ops':
// onnx_shape_ops.cpp).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "importer/import_context.h"
#include "importer/onnx_constants.h"
#include "importer/onnx_shape_ops.h"

namespace pf::onnx_import {

namespace {

using onnx::TensorProto;

std::string dims_text(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out.append(i ? "," : "").append(std::to_string(v[i]));
  return out + "]";
}

SymShape broadcast(Importer& im, const SymShape& a, const SymShape& b) {
  const size_t rank = std::max(a.size(), b.size());
  SymShape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const SymDim one = SymDim::of(1);
    const SymDim& x = i < rank - a.size() ? one : a[i - (rank - a.size())];
    const SymDim& y = i < rank - b.size() ? one : b[i - (rank - b.size())];
    if (x == y || y == one)
      out[i] = x;
    else if (x == one)
      out[i] = y;
    else
      im.fail(fmt::format("shapes {} and {} do not broadcast", shape_text(a), shape_text(b)));
  }
  return out;
}

/// A number as an IR scalar constant.
Tensor number(Importer& im, double v) {
  const std::string name = fmt::format("const.{}", number_text(v));
  if (!im.is_known(name)) {
    Known k;
    k.type = TensorProto::FLOAT;
    k.reals = {v};
    im.set(name, std::move(k));
  }
  return im.tensor(name);
}

void require_unused_outputs(Importer& im, int from) {
  for (int i = from; i < im.node().output_size(); ++i)
    if (!im.node().output(i).empty() && im.uses(im.node().output(i)) > 0)
      im.fail(fmt::format("output {} ('{}') is used, and only the first output is translated", i,
                          im.node().output(i)));
}

// ---- Elementwise.

void binary(Importer& im, const char* op) {
  const Tensor a = im.input(0), b = im.input(1);
  im.emit(out0(im), fmt::format("{} {}", op, Importer::operands({a, b})), a.dtype, broadcast(im, a.shape, b.shape));
}
void translate_add(Importer& im) { binary(im, "add"); }
void translate_sub(Importer& im) { binary(im, "sub"); }
void translate_mul(Importer& im) { binary(im, "mul"); }
void translate_div(Importer& im) { binary(im, "div"); }

void unary(Importer& im, const char* op) {
  const Tensor x = im.input(0);
  im.emit(out0(im), fmt::format("{} %{}", op, x.name), x.dtype, x.shape);
}
void translate_sqrt(Importer& im) { unary(im, "sqrt"); }
void translate_exp(Importer& im) { unary(im, "exp"); }
void translate_log(Importer& im) { unary(im, "log"); }
void translate_tanh(Importer& im) { unary(im, "tanh"); }
void translate_relu(Importer& im) { unary(im, "relu"); }
void translate_sigmoid(Importer& im) { unary(im, "sigmoid"); }
void translate_neg(Importer& im) { unary(im, "neg"); }

void translate_reciprocal(Importer& im) {
  const Tensor x = im.input(0);
  const Tensor one = number(im, 1.0);
  im.emit(out0(im), fmt::format("div {}", Importer::operands({one, x})), x.dtype, x.shape);
}

void translate_pow(Importer& im) {
  const std::optional<double> e = im.constant_number(im.node().input(1));
  if (!e) im.fail("the exponent must be a single constant number");
  const Tensor x = im.input(0);
  if (*e == 0.5)
    im.emit(out0(im), fmt::format("sqrt %{}", x.name), x.dtype, x.shape);
  else
    im.emit(out0(im), fmt::format("pow %{} exponent={}", x.name, number_text(*e)), x.dtype, x.shape);
}

void translate_erf(Importer& im) {
  im.fail("Erf is translated only inside GELU, x * 0.5 * (1 + erf(x / sqrt(2))), which becomes gelu_erf");
}

void translate_cast(Importer& im) {
  const Tensor x = im.input(0);
  const std::optional<DType> to = dtype_of(static_cast<int32_t>(im.int_attr("to", TensorProto::FLOAT)));
  if (!to) im.fail("cast to an element type the IR does not have");
  if (*to == x.dtype) return im.alias(out0(im), x);
  im.emit(out0(im), fmt::format("cast %{} to={}", x.name, dtype_name(*to)), *to, x.shape);
}

void translate_identity(Importer& im) { im.alias(out0(im), im.input(0)); }

void translate_dropout(Importer& im) {
  require_unused_outputs(im, 1);
  const Tensor x = im.input(0);
  double p = 0.5;
  if (im.has_input(1)) {
    const std::optional<double> r = im.constant_number(im.node().input(1));
    if (!r) im.fail("the ratio must be a constant number");
    p = *r;
  } else if (im.real_attr("ratio", -1) >= 0) {
    p = im.real_attr("ratio", 0.5);
  }
  bool training = false;
  if (im.has_input(2)) {
    const std::optional<double> t = im.constant_number(im.node().input(2));
    if (!t) im.fail("training_mode must be a constant");
    training = *t != 0;
  }
  if (!training || p == 0) return im.alias(out0(im), x);
  im.emit(out0(im), fmt::format("dropout %{} p={} seed={}", x.name, number_text(p), ++im.dropout_seed), x.dtype,
          x.shape);
}

void translate_pad(Importer& im) {
  std::vector<int64_t> pads;
  if (im.has_input(1)) {
    for (const SymDim& d : im.known_input(1, "the pads").ints) pads.push_back(d.coef);
  } else if (auto a = im.ints_attr("pads")) {
    pads = *a;
  }
  if (std::any_of(pads.begin(), pads.end(), [](int64_t v) { return v != 0; }))
    im.fail("padding other than zero on every side is not supported (give the padding to Conv or the pooling op)");
  im.alias(out0(im), im.input(0));
}

// ---- Where, with a known condition: masks.

/// 1: the condition is true on and below the diagonal of its last two axes
/// (a causal mask); -1: true strictly above it (its complement); 0: other.
int triangle(const Known& c) {
  if (c.shape.size() < 2 || c.is_real()) return 0;
  const int64_t n = c.shape[c.shape.size() - 1], m = c.shape[c.shape.size() - 2];
  if (n != m || c.size() != n * n) return 0;
  bool lower = true, upper = true;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const bool v = c.ints[static_cast<size_t>(i * n + j)].coef != 0;
      lower = lower && v == (j <= i);
      upper = upper && v == (j > i);
    }
  return lower ? 1 : upper ? -1 : 0;
}

void translate_where(Importer& im) {
  const std::string& cond = im.node().input(0);
  if (const Known* c = im.known(cond)) {
    const int kind = triangle(*c);
    if (kind == 0)
      im.fail(fmt::format("the condition '{}' is a constant that is not a causal mask (true on and below the "
                          "diagonal, or its complement); the IR has no other constant masks",
                          cond));
    const int64_t n = c->shape.back();
    const Tensor mask = im.emit("", "causal_mask", DType::boolean, {SymDim::of(n), SymDim::of(n)});
    const Tensor a = im.input(kind == 1 ? 1 : 2), b = im.input(kind == 1 ? 2 : 1);
    const SymShape shape = broadcast(im, broadcast(im, mask.shape, a.shape), b.shape);
    im.emit(out0(im), fmt::format("where {}", Importer::operands({mask, a, b})), a.dtype, shape);
    return;
  }
  const Tensor c = im.input(0), a = im.input(1), b = im.input(2);
  const SymShape shape = broadcast(im, broadcast(im, c.shape, a.shape), b.shape);
  im.emit(out0(im), fmt::format("where {}", Importer::operands({c, a, b})), a.dtype, shape);
}

// ---- Linear algebra.

Tensor matmul(Importer& im, const std::string& value, const Tensor& a, const Tensor& b, bool ta, bool tb) {
  if (a.shape.size() < 2 || b.shape.size() < 2)
    im.fail(fmt::format("a matmul of {} and {}: both must have at least two axes", shape_text(a.shape),
                        shape_text(b.shape)));
  const SymDim m = a.shape[a.shape.size() - (ta ? 1 : 2)], k = a.shape[a.shape.size() - (ta ? 2 : 1)];
  const SymDim k2 = b.shape[b.shape.size() - (tb ? 1 : 2)], n = b.shape[b.shape.size() - (tb ? 2 : 1)];
  if (!(k == k2))
    im.fail(fmt::format("a matmul of {} and {}: inner sizes {} and {} differ", shape_text(a.shape),
                        shape_text(b.shape), k.str(), k2.str()));
  SymShape out(a.shape.begin(), a.shape.end() - 2);
  if (b.shape.size() > 2 && !std::equal(out.begin(), out.end(), b.shape.begin(), b.shape.end() - 2))
    im.fail(fmt::format("a matmul of {} and {}: the batch axes must be equal", shape_text(a.shape),
                        shape_text(b.shape)));
  out.push_back(m);
  out.push_back(n);
  std::string text = fmt::format("matmul {}", Importer::operands({a, b}));
  if (ta) text += " transpose_a=true";
  if (tb) text += " transpose_b=true";
  return im.emit(value, text, a.dtype, out);
}

void translate_matmul(Importer& im) {
  const Tensor a = im.input(0);
  auto it = im.transposed.find(im.node().input(1));
  if (it != im.transposed.end()) {
    matmul(im, out0(im), a, im.tensor(it->second), false, true);
    return;
  }
  matmul(im, out0(im), a, im.input(1), false, false);
}

void translate_gemm(Importer& im) {
  if (im.real_attr("alpha", 1) != 1 || im.real_attr("beta", 1) != 1)
    im.fail("alpha and beta other than 1 are not supported");
  const Tensor a = im.input(0), b = im.input(1);
  const bool bias = im.has_input(2);
  const Tensor y = matmul(im, bias ? "" : out0(im), a, b, im.int_attr("transA", 0) != 0, im.int_attr("transB", 0) != 0);
  if (!bias) return;
  const Tensor c = im.input(2);
  im.emit(out0(im), fmt::format("add {}", Importer::operands({y, c})), y.dtype, broadcast(im, y.shape, c.shape));
}

// A transposed weight read only by matmuls is read in place by them
// (transpose_b): a PyTorch Linear exports its weight [out, in] so.
void translate_transpose(Importer& im) {
  const std::string& in = im.node().input(0);
  const std::optional<std::vector<int64_t>> perm_attr = im.ints_attr("perm");
  if (im.is_param(in) && perm_attr && *perm_attr == std::vector<int64_t>{1, 0}) {
    const auto& readers = im.readers(out0(im));
    const bool only_matmuls = !readers.empty() && static_cast<int>(readers.size()) == im.uses(out0(im)) &&
                              std::all_of(readers.begin(), readers.end(), [](const auto& r) {
                                return r.first->op_type() == "MatMul" && r.second == 1;
                              });
    if (only_matmuls) {
      im.transposed[out0(im)] = in;
      return;
    }
  }
  const Tensor x = im.input(0);
  std::vector<int64_t> perm;
  if (perm_attr) {
    perm = *perm_attr;
  } else {
    for (size_t i = x.shape.size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  }
  if (perm.size() != x.shape.size()) im.fail("perm does not match the input's rank");
  SymShape out;
  for (int64_t p : perm) out.push_back(x.shape.at(static_cast<size_t>(p)));
  im.emit(out0(im), fmt::format("transpose %{} perm={}", x.name, dims_text(perm)), x.dtype, out);
}

// ---- Normalisation, softmax, reductions.

void softmax_like(Importer& im, const char* op) {
  const Tensor x = im.input(0);
  const int64_t axis = im.int_attr("axis", -1);
  im.emit(out0(im), fmt::format("{} %{} axis={}", op, x.name, axis), x.dtype, x.shape);
}
void translate_softmax(Importer& im) { softmax_like(im, "softmax"); }
void translate_log_softmax(Importer& im) { softmax_like(im, "log_softmax"); }

void translate_layer_norm(Importer& im) {
  require_unused_outputs(im, 1);
  const Tensor x = im.input(0);
  const int64_t axis = normalize_axis(im, im.int_attr("axis", -1), x.shape.size());
  if (axis != static_cast<int64_t>(x.shape.size()) - 1) im.fail("layer norm over other than the last axis");
  if (!im.has_input(2)) im.fail("layer norm without a bias (elementwise_affine with bias=False) is not supported");
  const Tensor w = im.input(1), b = im.input(2);
  im.emit(out0(im), fmt::format("layernorm {} eps={}", Importer::operands({x, w, b}), number_text(im.real_attr("epsilon", 1e-5))),
          x.dtype, x.shape);
}

void reduce(Importer& im, const char* op) {
  const Tensor x = im.input(0);
  std::optional<std::vector<int64_t>> axes = axes_of(im);
  std::vector<int64_t> list;
  if (axes) {
    for (int64_t a : *axes) list.push_back(normalize_axis(im, a, x.shape.size()));
  } else {
    for (size_t i = 0; i < x.shape.size(); ++i) list.push_back(static_cast<int64_t>(i));
  }
  std::sort(list.begin(), list.end());
  const bool keep = im.int_attr("keepdims", 1) != 0;
  SymShape shape;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    const bool reduced = std::binary_search(list.begin(), list.end(), static_cast<int64_t>(i));
    if (!reduced)
      shape.push_back(x.shape[i]);
    else if (keep)
      shape.push_back(SymDim::of(1));
  }
  im.emit(out0(im), fmt::format("{} %{} axes={} keepdims={}", op, x.name, dims_text(list), keep ? "true" : "false"),
          x.dtype, shape);
}
void translate_reduce_mean(Importer& im) { reduce(im, "reduce_mean"); }
void translate_reduce_sum(Importer& im) { reduce(im, "reduce_sum"); }
void translate_reduce_max(Importer& im) { reduce(im, "reduce_max"); }

// ---- Convolution and pooling (2-D, NCHW).

struct Window {
  std::vector<int64_t> kernel, stride, padding;
};

Window window(Importer& im, const std::vector<int64_t>& kernel) {
  Window w;
  w.kernel = kernel;
  w.stride = im.ints_attr("strides").value_or(std::vector<int64_t>{1, 1});
  const std::vector<int64_t> pads = im.ints_attr("pads").value_or(std::vector<int64_t>{0, 0, 0, 0});
  if (kernel.size() != 2 || w.stride.size() != 2 || pads.size() != 4)
    im.fail("only 2-D convolution and pooling are supported");
  if (pads[0] != pads[2] || pads[1] != pads[3]) im.fail("padding must be the same on both sides");
  w.padding = {pads[0], pads[1]};
  if (auto d = im.ints_attr("dilations"); d && std::any_of(d->begin(), d->end(), [](int64_t v) { return v != 1; }))
    im.fail("dilation is not supported");
  if (im.int_attr("ceil_mode", 0) != 0) im.fail("ceil_mode is not supported");
  return w;
}

SymShape windowed(Importer& im, const Tensor& x, const SymDim& channels, const Window& w) {
  if (x.shape.size() != 4) im.fail(fmt::format("the input {} is not NCHW", shape_text(x.shape)));
  SymShape out = {x.shape[0], channels};
  for (size_t i = 0; i < 2; ++i) {
    const int64_t in = numeric(im, x.shape[2 + i], "a spatial size");
    out.push_back(SymDim::of((in + 2 * w.padding[i] - w.kernel[i]) / w.stride[i] + 1));
  }
  return out;
}

void translate_conv(Importer& im) {
  const Tensor x = im.input(0), wt = im.input(1);
  if (wt.shape.size() != 4) im.fail("only 2-D convolution is supported");
  const Window w = window(im, {numeric(im, wt.shape[2], "the kernel"), numeric(im, wt.shape[3], "the kernel")});
  const int64_t groups = im.int_attr("group", 1);
  std::vector<Tensor> args = {x, wt};
  if (im.has_input(2)) args.push_back(im.input(2));
  std::string text = fmt::format("conv2d {} stride={} padding={}", Importer::operands(args), dims_text(w.stride),
                                 dims_text(w.padding));
  if (groups != 1) text += fmt::format(" groups={}", groups);
  im.emit(out0(im), text, x.dtype, windowed(im, x, wt.shape[0], w));
}

void pool(Importer& im, const char* op) {
  require_unused_outputs(im, 1);
  const Tensor x = im.input(0);
  const Window w = window(im, im.ints_attr("kernel_shape").value_or(std::vector<int64_t>{}));
  if (std::string(op) == "avg_pool2d" && im.int_attr("count_include_pad", 0) == 0 &&
      (w.padding[0] || w.padding[1]))
    im.fail("average pooling that leaves the padding out of the count is not supported");
  im.emit(out0(im),
          fmt::format("{} %{} kernel={} stride={} padding={}", op, x.name, dims_text(w.kernel), dims_text(w.stride),
                      dims_text(w.padding)),
          x.dtype, windowed(im, x, x.shape.at(1), w));
}
void translate_max_pool(Importer& im) { pool(im, "max_pool2d"); }
void translate_average_pool(Importer& im) { pool(im, "avg_pool2d"); }

// ---- Losses.

void translate_softmax_cross_entropy(Importer& im) {
  require_unused_outputs(im, 1);
  for (const onnx::AttributeProto& a : im.node().attribute())
    if (a.name() == "reduction" && a.s() != "mean") im.fail("only reduction='mean' is supported");
  if (im.has_input(2)) im.fail("class weights are not supported");
  const Tensor scores = im.input(0), labels = im.input(1);
  if (scores.shape.size() != 2) im.fail("scores of other than [N, C] are not supported");
  std::string text = fmt::format("cross_entropy {}", Importer::operands({scores, labels}));
  for (const onnx::AttributeProto& a : im.node().attribute())
    if (a.name() == "ignore_index") text += fmt::format(" ignore_index={}", a.i());
  im.emit(out0(im), text, DType::f32, {});
}

}  // namespace

const std::vector<OpRule>& op_rules() {
  static const std::vector<OpRule> rules = {
      {"Add", fold_add, translate_add},
      {"AveragePool", nullptr, translate_average_pool},
      {"Cast", fold_cast, translate_cast},
      {"Concat", fold_concat, translate_concat},
      {"Constant", fold_constant, nullptr},
      {"ConstantOfShape", fold_constant_of_shape, nullptr},
      {"Conv", nullptr, translate_conv},
      {"Div", fold_div, translate_div},
      {"Dropout", nullptr, translate_dropout},
      {"Equal", fold_equal, nullptr},
      {"Erf", nullptr, translate_erf},
      {"Exp", nullptr, translate_exp},
      {"Flatten", nullptr, translate_flatten},
      {"Gather", fold_gather, translate_gather},
      {"Gemm", nullptr, translate_gemm},
      {"Identity", fold_identity, translate_identity},
      {"LayerNormalization", nullptr, translate_layer_norm},
      {"Log", nullptr, translate_log},
      {"LogSoftmax", nullptr, translate_log_softmax},
      {"MatMul", nullptr, translate_matmul},
      {"MaxPool", nullptr, translate_max_pool},
      {"Mul", fold_mul, translate_mul},
      {"Neg", fold_neg, translate_neg},
      {"Not", fold_not, nullptr},
      {"Pad", nullptr, translate_pad},
      {"Pow", nullptr, translate_pow},
      {"Range", fold_range, nullptr},
      {"Reciprocal", fold_reciprocal, translate_reciprocal},
      {"ReduceMax", nullptr, translate_reduce_max},
      {"ReduceMean", nullptr, translate_reduce_mean},
      {"ReduceSum", nullptr, translate_reduce_sum},
      {"Relu", nullptr, translate_relu},
      {"Reshape", fold_reshape, translate_reshape},
      {"Shape", fold_shape, nullptr},
      {"Sigmoid", nullptr, translate_sigmoid},
      {"Slice", fold_slice, translate_slice},
      {"Softmax", nullptr, translate_softmax},
      {"SoftmaxCrossEntropyLoss", nullptr, translate_softmax_cross_entropy},
      {"Split", nullptr, translate_split},
      {"Sqrt", fold_sqrt, translate_sqrt},
      {"Squeeze", fold_squeeze, translate_squeeze},
      {"Sub", fold_sub, translate_sub},
      {"Tanh", nullptr, translate_tanh},
      {"Transpose", nullptr, translate_transpose},
      {"Unsqueeze", fold_unsqueeze, translate_unsqueeze},
      {"Where", fold_where, translate_where},
  };
  return rules;
}

const OpRule* find_rule(const std::string& onnx_op) {
  for (const OpRule& r : op_rules())
    if (onnx_op == r.onnx_op) return &r;
  return nullptr;
}

}  // namespace pf::onnx_import
