// Backward kernels against central finite differences of the forward kernels in f64, adjoint identities, ties, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"
#include "tests/op_attr_entries.h"
#include "tests/tensor_bytes.h"

namespace pf::cpu {
namespace {

// A gradient op is checked against the derivative of L = <forward(in), gbar>
// (gbar a fixed random tensor of the forward's result shape) with respect to
// one operand, taken by central differences of the f64 forward kernel: the
// gradient op must return exactly that derivative given g = gbar. Ops that
// are linear in g and have a linear forward partner (broadcast_to / sum_to,
// slice / slice_grad) are checked as adjoints instead: <A x, y> = <x, A^T y>.

// ---------------------------------------------------------------------------
// Tensors: values held as doubles (f64, or integer ids and targets).

struct Tensor {
  TensorType type;
  std::vector<double> v;  // row-major
};

Tensor values(DType dt, Shape shape, std::vector<double> v) { return {{dt, std::move(shape)}, std::move(v)}; }

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  Tensor uniform(Shape shape, double lo = -2, double hi = 2) {
    Tensor t{{DType::f64, std::move(shape)}, {}};
    std::uniform_real_distribution<double> u(lo, hi);
    for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(u(rng_));
    return t;
  }
  // Values at least `gap` apart (a shuffled ladder), so that no perturbation
  // of a finite difference changes which element is a maximum.
  Tensor distinct(Shape shape, double gap = 0.05) {
    Tensor t{{DType::f64, std::move(shape)}, {}};
    for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<double>(i) * gap - 1);
    std::shuffle(t.v.begin(), t.v.end(), rng_);
    return t;
  }
  // Uniform in [-hi, -lo] or [lo, hi]: away from a kink at 0.
  Tensor away_from_zero(Shape shape, double lo, double hi) {
    Tensor t = uniform(std::move(shape), lo, hi);
    std::bernoulli_distribution flip(0.5);
    for (double& v : t.v) v = flip(rng_) ? -v : v;
    return t;
  }

 private:
  std::mt19937_64 rng_;
};

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// ---------------------------------------------------------------------------
// Attributes (names are string literals, so they outlive the OpAttrs).

using testing_support::bool_attr;
using testing_support::dim_attr;
using testing_support::dims_attr;
using testing_support::real_attr;
using testing_support::tensor_bytes;

using Attrs = std::vector<OpAttrs::Entry>;

OpAttrs make_attrs(const Attrs& entries) {
  OpAttrs a;
  for (const OpAttrs::Entry& e : entries) a.add(e);
  return a;
}

// ---------------------------------------------------------------------------
// Running an f64 kernel: the result types come from the op's shape rule.

std::vector<Tensor> run(OpKind op, const std::vector<Tensor>& in, const Attrs& attr_entries) {
  const OpAttrs attrs = make_attrs(attr_entries);
  std::vector<TensorType> in_types;
  std::vector<std::vector<std::byte>> in_bytes;
  for (const Tensor& t : in) {
    in_types.push_back(t.type);
    in_bytes.push_back(tensor_bytes(t.type.dtype, t.v));
  }
  const std::vector<TensorType> out_types = op_info(op).shape(ShapeContext{op_name(op), in_types, attrs, {}});
  std::vector<std::vector<double>> out(out_types.size());
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (auto& b : in_bytes) in_ptrs.push_back(b.data());
  for (size_t i = 0; i < out_types.size(); ++i) {
    out[i].assign(static_cast<size_t>(std::max<int64_t>(out_types[i].numel(), 1)), std::nan(""));  // poisoned
    out_ptrs.push_back(out[i].data());
  }
  forward_kernel(op, DType::f64)(KernelArgs{in_types, in_ptrs, out_types, out_ptrs, attrs});
  std::vector<Tensor> results;
  for (size_t i = 0; i < out_types.size(); ++i) {
    out[i].resize(static_cast<size_t>(out_types[i].numel()));
    results.push_back({out_types[i], out[i]});
  }
  return results;
}

Tensor run1(OpKind op, const std::vector<Tensor>& in, const Attrs& attrs = {}) { return run(op, in, attrs)[0]; }

// ---------------------------------------------------------------------------
// Finite differences.

// L(in) = <forward(in)[0], gbar>.
double loss(OpKind forward, const std::vector<Tensor>& in, const Attrs& attrs, const Tensor& gbar) {
  return dot(run1(forward, in, attrs).v, gbar.v);
}

// dL/d in[k] by central differences with step h. In f64 with h = 1e-5 the
// truncation error (h^2 f''' / 6) and the rounding error (eps |L| / h) are
// both near 1e-10.
std::vector<double> numeric_grad(OpKind forward, std::vector<Tensor> in, const Attrs& attrs, size_t k,
                                 const Tensor& gbar, double h = 1e-5) {
  std::vector<double> d(in[k].v.size());
  for (size_t i = 0; i < d.size(); ++i) {
    const double x = in[k].v[i];
    in[k].v[i] = x + h;
    const double up = loss(forward, in, attrs, gbar);
    in[k].v[i] = x - h;
    const double down = loss(forward, in, attrs, gbar);
    in[k].v[i] = x;
    d[i] = (up - down) / (2 * h);
  }
  return d;
}

// |got - want| <= tol * max(1, the largest |want|), element by element.
void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, const std::string& what,
                     double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= tol * scale)) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", finite differences give " << want[i];
      return;
    }
}

// The gradient op's result `grad` against dL/d in[k] of `forward`.
void expect_fd(const Tensor& grad, OpKind forward, const std::vector<Tensor>& in, const Attrs& attrs, size_t k,
               const Tensor& gbar, const std::string& what) {
  ASSERT_EQ(grad.type.shape, in[k].type.shape) << what;
  expect_near_all(grad.v, numeric_grad(forward, in, attrs, k, gbar), what);
}

// ---------------------------------------------------------------------------
// Elementwise activations, away from relu's kink.

TEST(BackwardKernels, ReluGradMatchesFiniteDifferences) {
  Gen g(1);
  const Tensor x = g.away_from_zero({3, 7}, 0.01, 3), gbar = g.uniform({3, 7});
  expect_fd(run1(OpKind::relu_grad, {gbar, x}), OpKind::relu, {x}, {}, 0, gbar, "relu_grad");
}

TEST(BackwardKernels, GeluGradMatchesFiniteDifferences) {
  Gen g(2);
  const Tensor x = g.uniform({4, 9}, -6, 6), gbar = g.uniform({4, 9});
  expect_fd(run1(OpKind::gelu_grad, {gbar, x}), OpKind::gelu, {x}, {}, 0, gbar, "gelu_grad");
}

TEST(BackwardKernels, GeluErfGradMatchesFiniteDifferences) {
  Gen g(3);
  const Tensor x = g.uniform({4, 9}, -6, 6), gbar = g.uniform({4, 9});
  expect_fd(run1(OpKind::gelu_erf_grad, {gbar, x}), OpKind::gelu_erf, {x}, {}, 0, gbar, "gelu_erf_grad");
}

TEST(BackwardKernels, SiluGradMatchesFiniteDifferences) {
  Gen g(4);
  const Tensor x = g.uniform({4, 9}, -8, 8), gbar = g.uniform({4, 9});
  expect_fd(run1(OpKind::silu_grad, {gbar, x}), OpKind::silu, {x}, {}, 0, gbar, "silu_grad");
}

TEST(BackwardKernels, SiluGradIsFiniteInTheFarTails) {
  // Far out the slope is 0 and the gradient 0 or g: never 0 * inf.
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = values(DType::f64, {6}, {-inf, -1e200, -800, 800, 1e200, inf});
  const Tensor gbar = values(DType::f64, {6}, {2, 2, 2, 2, 2, 2});
  EXPECT_EQ(run1(OpKind::silu_grad, {gbar, x}).v, (std::vector<double>{0, 0, 0, 2, 2, 2}));
}

TEST(BackwardKernels, GeluGradIsFiniteInTheFarTails) {
  // The slope is 0 and 1 far out; x^3 overflowing to inf must not turn 0 * inf into NaN.
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = values(DType::f64, {6}, {-inf, -1e200, -1e20, 1e20, 1e200, inf});
  const Tensor gbar = values(DType::f64, {6}, {2, 2, 2, 2, 2, 2});
  EXPECT_EQ(run1(OpKind::gelu_grad, {gbar, x}).v, (std::vector<double>{0, 0, 0, 2, 2, 2}));
}

// ---------------------------------------------------------------------------
// softmax and log_softmax, over the last, a middle and the first axis.

TEST(BackwardKernels, SoftmaxGradsMatchFiniteDifferences) {
  Gen g(3);
  struct Case {
    Shape shape;
    int64_t axis;
  };
  for (const Case& c : std::vector<Case>{{{3, 7}, -1}, {{2, 5, 4}, 1}, {{4, 3, 2}, 0}}) {
    for (bool log : {false, true}) {
      const OpKind fwd = log ? OpKind::log_softmax : OpKind::softmax;
      const OpKind bwd = log ? OpKind::log_softmax_grad : OpKind::softmax_grad;
      const Attrs attrs = {dim_attr("axis", c.axis)};
      const Tensor x = g.uniform(c.shape, -3, 3), gbar = g.uniform(c.shape);
      const Tensor y = run1(fwd, {x}, attrs);
      expect_fd(run1(bwd, {gbar, y}, attrs), fwd, {x}, attrs, 0, gbar,
                std::string(op_name(bwd)) + " axis " + std::to_string(c.axis));
    }
  }
}

// ---------------------------------------------------------------------------
// layernorm and rmsnorm: every result against the forward's derivative.

TEST(BackwardKernels, LayernormGradMatchesFiniteDifferences) {
  Gen g(4);
  struct Case {
    Shape x;
    double eps;
  };
  for (const Case& c : std::vector<Case>{{{3, 8}, 1e-5}, {{2, 2, 5}, 0.1}, {{1, 1}, 1e-5}}) {
    const int64_t ch = c.x.back();
    const Attrs attrs = {real_attr("eps", c.eps)};
    const Tensor x = g.uniform(c.x, -2, 3), w = g.uniform({ch}), b = g.uniform({ch}), gbar = g.uniform(c.x);
    const std::vector<Tensor> d = run(OpKind::layernorm_grad, {gbar, x, w}, attrs);
    ASSERT_EQ(d.size(), 3u);
    const std::string what = "layernorm_grad " + TensorType{DType::f64, c.x}.str();
    expect_fd(d[0], OpKind::layernorm, {x, w, b}, attrs, 0, gbar, what + " dx");
    expect_fd(d[1], OpKind::layernorm, {x, w, b}, attrs, 1, gbar, what + " dw");
    expect_fd(d[2], OpKind::layernorm, {x, w, b}, attrs, 2, gbar, what + " db");
  }
}

TEST(BackwardKernels, RmsnormGradMatchesFiniteDifferences) {
  Gen g(5);
  struct Case {
    Shape x;
    double eps;
  };
  for (const Case& c : std::vector<Case>{{{3, 8}, 1e-6}, {{2, 2, 5}, 0.1}}) {
    const Attrs attrs = {real_attr("eps", c.eps)};
    const Tensor x = g.uniform(c.x), w = g.uniform({c.x.back()}), gbar = g.uniform(c.x);
    const std::vector<Tensor> d = run(OpKind::rmsnorm_grad, {gbar, x, w}, attrs);
    ASSERT_EQ(d.size(), 2u);
    const std::string what = "rmsnorm_grad " + TensorType{DType::f64, c.x}.str();
    expect_fd(d[0], OpKind::rmsnorm, {x, w}, attrs, 0, gbar, what + " dx");
    expect_fd(d[1], OpKind::rmsnorm, {x, w}, attrs, 1, gbar, what + " dw");
  }
}

// ---------------------------------------------------------------------------
// embedding: repeated ids collect the sum of their rows; unnamed rows get 0.

TEST(BackwardKernels, EmbeddingGradMatchesFiniteDifferences) {
  Gen g(6);
  const Tensor table = g.uniform({6, 4});
  for (DType dt : {DType::i32, DType::i64}) {
    const Tensor ids = values(dt, {2, 3}, {1, 4, 1, 1, 0, 4});  // 1 three times, 4 twice, 2, 3, 5 never
    const Tensor gbar = g.uniform({2, 3, 4});
    const Tensor d = run1(OpKind::embedding_grad, {gbar, ids}, {dim_attr("rows", 6)});
    expect_fd(d, OpKind::embedding, {table, ids}, {}, 0, gbar, "embedding_grad " + std::string(dtype_name(dt)));
    for (int64_t row : {2, 3, 5})
      for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(d.v[row * 4 + j], 0.0) << "row " << row << " is named by no id";
  }
}

TEST(BackwardKernels, EmbeddingGradRejectsAnIdOutOfRange) {
  const Tensor gbar = values(DType::f64, {3, 2}, {1, 2, 3, 4, 5, 6});
  const Tensor ids = values(DType::i64, {3}, {0, 5, 6});
  try {
    run1(OpKind::embedding_grad, {gbar, ids}, {dim_attr("rows", 6)});
    ADD_FAILURE() << "no error for id 6 of 6 rows";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "embedding_grad: index 6 at position 2 is out of range [0, 6)");
  }
}

// ---------------------------------------------------------------------------
// reduce_max: finite differences without ties; ties share the gradient.

TEST(BackwardKernels, ReduceMaxGradMatchesFiniteDifferencesWithoutTies) {
  Gen g(7);
  struct Case {
    Shape x;
    std::vector<int64_t> axes;
    bool keep;
  };
  for (const Case& c : std::vector<Case>{{{2, 3, 9}, {-1}, false},
                                         {{2, 3, 4}, {0, 2}, true},
                                         {{6, 5}, {0}, false},
                                         {{3, 4, 5, 2}, {1, 3}, false},
                                         {{2, 3}, {0, 1}, false}}) {
    Attrs attrs = {dims_attr("axes", c.axes)};
    if (c.keep) attrs.push_back(bool_attr("keepdims", true));
    const Tensor x = g.distinct(c.x);
    const Tensor y = run1(OpKind::reduce_max, {x}, attrs);
    const Tensor gbar = g.uniform(y.type.shape);
    expect_fd(run1(OpKind::reduce_max_grad, {gbar, x, y}, attrs), OpKind::reduce_max, {x}, attrs, 0, gbar,
              "reduce_max_grad " + x.type.str());
  }
}

TEST(BackwardKernels, ReduceMaxGradSharesTiesEqually) {
  // Rows: two maxima of 3, then three maxima of 2 (every element); columns
  // of the second case: 5 twice, and 4 once.
  const Tensor x = values(DType::f64, {2, 3}, {1, 3, 3, 2, 2, 2});
  const Tensor y = values(DType::f64, {2}, {3, 2});
  const Tensor gbar = values(DType::f64, {2}, {6, 3});
  EXPECT_EQ(run1(OpKind::reduce_max_grad, {gbar, x, y}, {dims_attr("axes", {1})}).v,
            (std::vector<double>{0, 3, 3, 1, 1, 1}));
  const Tensor xc = values(DType::f64, {3, 2}, {5, 1, 5, 4, 0, 0});
  const Tensor yc = values(DType::f64, {1, 2}, {5, 4});
  const Tensor gc = values(DType::f64, {1, 2}, {2, 7});
  EXPECT_EQ(run1(OpKind::reduce_max_grad, {gc, xc, yc}, {dims_attr("axes", {0}), bool_attr("keepdims", true)}).v,
            (std::vector<double>{1, 0, 1, 7, 0, 0}));
}

// ---------------------------------------------------------------------------
// conv2d: both gradients, with groups, stride, padding, 1x1 (no im2col),
// depthwise, a rectangular kernel, and inputs whose last rows no window reads.

TEST(BackwardKernels, Conv2dGradsMatchFiniteDifferences) {
  Gen g(8);
  struct Case {
    const char* name;
    Shape x, w;
    std::vector<int64_t> stride, pad;
    int64_t groups;
  };
  for (const Case& c : std::vector<Case>{{"groups, stride, padding", {2, 4, 5, 6}, {6, 2, 3, 3}, {2, 1}, {1, 1}, 2},
                                         {"1x1", {2, 3, 4, 4}, {5, 3, 1, 1}, {1, 1}, {0, 0}, 1},
                                         {"depthwise", {1, 3, 5, 5}, {3, 1, 3, 3}, {1, 1}, {1, 1}, 3},
                                         {"rectangular kernel", {1, 3, 6, 7}, {4, 3, 2, 3}, {1, 2}, {0, 1}, 1},
                                         {"1x1 strided", {1, 2, 5, 5}, {2, 2, 1, 1}, {2, 2}, {0, 0}, 1},
                                         {"last rows unread", {1, 2, 6, 6}, {3, 2, 3, 3}, {2, 2}, {0, 0}, 1}}) {
    SCOPED_TRACE(c.name);
    const Attrs attrs = {dims_attr("stride", c.stride), dims_attr("padding", c.pad), dim_attr("groups", c.groups)};
    const Tensor x = g.uniform(c.x), w = g.uniform(c.w);
    const Tensor gbar = g.uniform(run1(OpKind::conv2d, {x, w}, attrs).type.shape);
    Attrs in_attrs = attrs, w_attrs = attrs;
    in_attrs.push_back(dims_attr("input_shape", c.x));
    w_attrs.push_back(dims_attr("weight_shape", c.w));
    expect_fd(run1(OpKind::conv2d_grad_input, {gbar, w}, in_attrs), OpKind::conv2d, {x, w}, attrs, 0, gbar,
              "conv2d_grad_input");
    expect_fd(run1(OpKind::conv2d_grad_weight, {gbar, x}, w_attrs), OpKind::conv2d, {x, w}, attrs, 1, gbar,
              "conv2d_grad_weight");
  }
}

// ---------------------------------------------------------------------------
// Pooling: without ties (max) and with overlapping windows and padding.

TEST(BackwardKernels, PoolGradsMatchFiniteDifferences) {
  Gen g(9);
  struct Case {
    const char* name;
    Shape x;
    Attrs attrs;
  };
  for (const Case& c :
       std::vector<Case>{{"2x2, defaults", {2, 3, 6, 7}, {dims_attr("kernel", {2, 2})}},
                         {"3x3 stride 2 padding 1",
                          {1, 2, 7, 6},
                          {dims_attr("kernel", {3, 3}), dims_attr("stride", {2, 2}), dims_attr("padding", {1, 1})}},
                         {"rectangular, overlapping",
                          {1, 1, 5, 6},
                          {dims_attr("kernel", {2, 3}), dims_attr("stride", {1, 1}), dims_attr("padding", {1, 0})}}}) {
    SCOPED_TRACE(c.name);
    const Tensor x = g.distinct(c.x);
    const Tensor gbar = g.uniform(run1(OpKind::max_pool2d, {x}, c.attrs).type.shape);
    expect_fd(run1(OpKind::max_pool2d_grad, {gbar, x}, c.attrs), OpKind::max_pool2d, {x}, c.attrs, 0, gbar,
              "max_pool2d_grad");
    Attrs avg_attrs = c.attrs;
    avg_attrs.push_back(dims_attr("input_shape", c.x));
    expect_fd(run1(OpKind::avg_pool2d_grad, {gbar}, avg_attrs), OpKind::avg_pool2d, {x}, c.attrs, 0, gbar,
              "avg_pool2d_grad");
  }
}

TEST(BackwardKernels, MaxPoolGradRoutesTiesToTheFirstMaximum) {
  // One 2x3 input, 2x2 windows with stride 1: both windows see the maximum 4
  // twice; each sends its gradient to its first 4 in row-major order, and
  // the element both windows pick collects both.
  const Tensor x = values(DType::f64, {1, 1, 2, 3}, {1, 4, 4, 4, 0, 2});
  const Tensor gbar = values(DType::f64, {1, 1, 1, 2}, {10, 1});
  const Attrs attrs = {dims_attr("kernel", {2, 2}), dims_attr("stride", {1, 1})};
  EXPECT_EQ(run1(OpKind::max_pool2d_grad, {gbar, x}, attrs).v, (std::vector<double>{0, 11, 0, 0, 0, 0}));
}

// ---------------------------------------------------------------------------
// cross_entropy: the mean over the counted targets, with ignore_index.

TEST(BackwardKernels, CrossEntropyGradMatchesFiniteDifferences) {
  Gen g(10);
  struct Case {
    const char* name;
    Tensor targets;
    Attrs attrs;
  };
  const Tensor logits = g.uniform({2, 3, 5}, -3, 3);
  for (const Case& c : std::vector<Case>{
           {"default ignore_index", values(DType::i64, {2, 3}, {0, 4, -100, 2, 2, 1}), {}},
           {"ignore_index 2", values(DType::i32, {2, 3}, {2, 4, 2, 0, 1, 3}), {dim_attr("ignore_index", 2)}},
           {"nothing ignored", values(DType::i32, {2, 3}, {0, 1, 2, 3, 4, 0}), {}},
           {"every target ignored", values(DType::i64, {2, 3}, {-100, -100, -100, -100, -100, -100}), {}}}) {
    SCOPED_TRACE(c.name);
    const Tensor gbar = values(DType::f64, {}, {0.7});
    const Tensor d = run1(OpKind::cross_entropy_grad, {gbar, logits, c.targets}, c.attrs);
    expect_fd(d, OpKind::cross_entropy, {logits, c.targets}, c.attrs, 0, gbar, "cross_entropy_grad");
    // Ignored rows get exactly zero.
    const int64_t ignore = c.attrs.empty() ? -100 : 2;
    for (size_t r = 0; r < c.targets.v.size(); ++r) {
      if (static_cast<int64_t>(c.targets.v[r]) != ignore) continue;
      for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(d.v[r * 5 + j], 0.0) << "ignored row " << r;
    }
  }
}

TEST(BackwardKernels, CrossEntropyGradRejectsATargetOutOfRange) {
  const Tensor gbar = values(DType::f64, {}, {1});
  const Tensor logits = values(DType::f64, {2, 3}, {0, 1, 2, 3, 4, 5});
  try {
    run1(OpKind::cross_entropy_grad, {gbar, logits, values(DType::i32, {2}, {1, 3})});
    ADD_FAILURE() << "no error for target 3 of 3 classes";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cross_entropy_grad: target 3 at position 1 is out of range [0, 3)");
  }
}

// ---------------------------------------------------------------------------
// Linear pairs as adjoints.

TEST(BackwardKernels, SumToIsTheAdjointOfBroadcastTo) {
  Gen g(11);
  struct Case {
    Shape small, big;
  };
  for (const Case& c : std::vector<Case>{{{3, 1}, {2, 3, 4}},
                                         {{}, {2, 3}},
                                         {{9}, {3, 9}},
                                         {{2, 5}, {2, 5}},
                                         {{2, 1, 3}, {2, 4, 3}},
                                         {{1, 3, 1}, {4, 3, 5}},
                                         {{1}, {3, 0}}}) {
    const Tensor x = g.uniform(c.small), y = g.uniform(c.big);
    const Tensor bx = run1(OpKind::broadcast_to, {x}, {dims_attr("shape", c.big)});
    const Tensor sy = run1(OpKind::sum_to, {y}, {dims_attr("shape", c.small)});
    ASSERT_EQ(bx.type.shape, c.big);
    ASSERT_EQ(sy.type.shape, c.small);
    EXPECT_NEAR(dot(bx.v, y.v), dot(x.v, sy.v), 1e-12 * (1 + std::abs(dot(bx.v, y.v))))
        << x.type.str() << " and " << y.type.str();
  }
}

TEST(BackwardKernels, SliceGradIsTheAdjointOfSlice) {
  Gen g(12);
  struct Case {
    Shape x;
    int64_t axis, start, end;
  };
  for (const Case& c : std::vector<Case>{
           {{3, 5, 4}, 1, 1, 4}, {{3, 5}, -1, 2, 5}, {{4, 3}, 0, 0, 1}, {{2, 3}, 1, 0, 3}, {{2, 4}, 1, 2, 2}}) {
    const Tensor x = g.uniform(c.x);
    const Tensor sx =
        run1(OpKind::slice, {x}, {dim_attr("axis", c.axis), dim_attr("start", c.start), dim_attr("end", c.end)});
    const Tensor y = g.uniform(sx.type.shape);
    const int64_t ax = c.axis < 0 ? c.axis + x.type.rank() : c.axis;
    const Tensor gy = run1(OpKind::slice_grad, {y},
                           {dim_attr("axis", c.axis), dim_attr("start", c.start), dim_attr("size", c.x[ax])});
    ASSERT_EQ(gy.type.shape, c.x);
    EXPECT_NEAR(dot(sx.v, y.v), dot(x.v, gy.v), 1e-12 * (1 + std::abs(dot(sx.v, y.v)))) << x.type.str();
  }
}

// ---------------------------------------------------------------------------
// Shape rules: bad input rejected with lower-case messages quoting the types
// (the verifier adds the op's name and the location).

std::string shape_error(OpKind op, std::vector<TensorType> operands, const Attrs& attr_entries) {
  const OpAttrs attrs = make_attrs(attr_entries);
  try {
    op_info(op).shape(ShapeContext{op_name(op), operands, attrs, {}});
  } catch (const Error& e) {
    return e.message();
  }
  return "(accepted)";
}

TEST(BackwardShapeRules, RejectBadInput) {
  const DType f = DType::f32;
  EXPECT_EQ(shape_error(OpKind::broadcast_to, {{f, {2, 3}}}, {dims_attr("shape", {4, 3})}),
            "f32[2,3] does not broadcast to [4,3]");
  EXPECT_EQ(shape_error(OpKind::broadcast_to, {{f, {2, 3}}}, {dims_attr("shape", {3})}),
            "f32[2,3] does not broadcast to [3]");
  EXPECT_EQ(shape_error(OpKind::broadcast_to, {{f, {}}}, {dims_attr("shape", {int64_t{1} << 30, int64_t{1} << 30})}),
            "'shape' [1073741824,1073741824] has more than 2^50 elements");
  EXPECT_EQ(shape_error(OpKind::sum_to, {{f, {2, 3}}}, {dims_attr("shape", {4})}),
            "the shape [4] does not broadcast to f32[2,3]");
  EXPECT_EQ(shape_error(OpKind::sum_to, {{DType::i32, {2}}}, {dims_attr("shape", {1})}),
            "the operand must be a float tensor, got i32[2]");
  EXPECT_EQ(shape_error(OpKind::relu_grad, {{f, {3, 2}}, {f, {2, 3}}}, {}),
            "the gradient f32[3,2] must have the type f32[2,3] of the input");
  EXPECT_EQ(shape_error(OpKind::gelu_grad, {{DType::f64, {2}}, {f, {2}}}, {}),
            "dtypes of f64[2] and f32[2] differ; insert a cast");
  EXPECT_EQ(shape_error(OpKind::softmax_grad, {{f, {2, 3}}, {f, {2, 3}}}, {dim_attr("axis", 2)}),
            "axis 2 is out of range for rank 2");
  EXPECT_EQ(shape_error(OpKind::log_softmax_grad, {{f, {3}}, {f, {2, 3}}}, {}),
            "the gradient f32[3] must have the type f32[2,3] of the log_softmax output");
  EXPECT_EQ(shape_error(OpKind::layernorm_grad, {{f, {2, 4}}, {f, {2, 4}}, {f, {3}}}, {}),
            "the weight f32[3] must be [4] to match the last axis of f32[2,4]");
  EXPECT_EQ(shape_error(OpKind::rmsnorm_grad, {{f, {2, 4}}, {f, {2, 4}}, {f, {4}}}, {real_attr("eps", 0)}),
            "eps must be positive");
  EXPECT_EQ(shape_error(OpKind::embedding_grad, {{f, {2, 3, 8}}, {DType::i32, {2, 4}}}, {dim_attr("rows", 5)}),
            "indices i32[2,4] must have the shape of the gradient f32[2,3,8] without its last axis, [2,3]");
  EXPECT_EQ(shape_error(OpKind::embedding_grad, {{f, {2, 8}}, {f, {2}}}, {dim_attr("rows", 5)}),
            "the indices must be i32 or i64, got f32[2]");
  EXPECT_EQ(shape_error(OpKind::embedding_grad, {{f, {2, 8}}, {DType::i64, {2}}}, {dim_attr("rows", -1)}),
            "rows must not be negative, got -1");
  EXPECT_EQ(shape_error(OpKind::embedding_grad, {{f, {2, int64_t{1} << 30}}, {DType::i64, {2}}},
                        {dim_attr("rows", int64_t{1} << 30)}),
            "the result [1073741824,1073741824] has more than 2^50 elements");
  const Attrs slice = {dim_attr("axis", 1), dim_attr("start", 1), dim_attr("size", 3)};
  EXPECT_EQ(shape_error(OpKind::slice_grad, {{f, {2, 3}}}, slice),
            "range [1, 4) of the gradient f32[2,3] is not within axis 1 of size 3");
  EXPECT_EQ(
      shape_error(OpKind::slice_grad, {{f, {2, 3}}}, {dim_attr("axis", 1), dim_attr("start", -1), dim_attr("size", 5)}),
      "range [-1, 2) of the gradient f32[2,3] is not within axis 1 of size 5");
  EXPECT_EQ(shape_error(OpKind::reduce_max_grad, {{f, {2}}, {f, {2, 3}}, {f, {3}}}, {dims_attr("axes", {1})}),
            "the maximum f32[3] must have the type f32[2] of the reduce_max of f32[2,3]");
  EXPECT_EQ(shape_error(OpKind::reduce_max_grad, {{f, {2, 1}}, {f, {2, 3}}, {f, {2}}}, {dims_attr("axes", {1})}),
            "the gradient f32[2,1] must have the type f32[2] of the maximum");
  EXPECT_EQ(shape_error(OpKind::conv2d_grad_input, {{f, {1, 4, 3, 3}}, {f, {4, 3, 3, 3}}},
                        {dims_attr("input_shape", {1, 3, 8, 8})}),
            "the gradient f32[1,4,3,3] must have the type f32[1,4,6,6] of the conv2d of f32[1,3,8,8] and f32[4,3,3,3]");
  EXPECT_EQ(shape_error(OpKind::conv2d_grad_input, {{f, {1, 4, 6, 6}}, {f, {4, 3, 3, 3}}},
                        {dims_attr("input_shape", {1, 3, 8})}),
            "'input_shape' must be [N,C,H,W], got [1,3,8]");
  EXPECT_EQ(shape_error(OpKind::conv2d_grad_weight, {{f, {1, 4, 6, 6}}, {f, {1, 3, 8, 8}}},
                        {dims_attr("weight_shape", {4, 2, 3, 3})}),
            "the weight f32[4,2,3,3] needs 3 input channels per group, got 2");
  EXPECT_EQ(shape_error(OpKind::max_pool2d_grad, {{f, {1, 1, 2, 2}}, {f, {1, 1, 6, 6}}}, {dims_attr("kernel", {2, 2})}),
            "the gradient f32[1,1,2,2] must have the type f32[1,1,3,3] of the max_pool2d of f32[1,1,6,6]");
  EXPECT_EQ(shape_error(OpKind::avg_pool2d_grad, {{f, {1, 1, 3, 3}}},
                        {dims_attr("kernel", {2, 2}), dims_attr("input_shape", {1, 1, -6, 6})}),
            "dimension -6 of 'input_shape' [1,1,-6,6] is negative");
  EXPECT_EQ(shape_error(OpKind::cross_entropy_grad, {{f, {2}}, {f, {2, 5}}, {DType::i32, {2}}}, {}),
            "the gradient f32[2] must have the type f32[] of the loss");
  EXPECT_EQ(shape_error(OpKind::cross_entropy_grad, {{f, {}}, {f, {2, 5}}, {DType::i32, {3}}}, {}),
            "targets i32[3] must have the shape of the logits f32[2,5] without the class axis, [2]");
}

TEST(BackwardShapeRules, ResultTypes) {
  const DType f = DType::f32;
  auto types = [](OpKind op, std::vector<TensorType> operands, const Attrs& attr_entries) {
    const OpAttrs attrs = make_attrs(attr_entries);
    return op_info(op).shape(ShapeContext{op_name(op), operands, attrs, {}});
  };
  EXPECT_EQ(types(OpKind::sum_to, {{f, {2, 3, 4}}}, {dims_attr("shape", {3, 1})}),
            (std::vector<TensorType>{{f, {3, 1}}}));
  EXPECT_EQ(types(OpKind::layernorm_grad, {{f, {2, 4}}, {f, {2, 4}}, {f, {4}}}, {}),
            (std::vector<TensorType>{{f, {2, 4}}, {f, {4}}, {f, {4}}}));
  EXPECT_EQ(types(OpKind::rmsnorm_grad, {{f, {2, 4}}, {f, {2, 4}}, {f, {4}}}, {}),
            (std::vector<TensorType>{{f, {2, 4}}, {f, {4}}}));
  EXPECT_EQ(types(OpKind::embedding_grad, {{f, {2, 3, 8}}, {DType::i64, {2, 3}}}, {dim_attr("rows", 50)}),
            (std::vector<TensorType>{{f, {50, 8}}}));
  // The input size that the forward's floor division loses is the attribute's.
  EXPECT_EQ(types(OpKind::conv2d_grad_input, {{f, {1, 3, 2, 2}}, {f, {3, 2, 3, 3}}},
                  {dims_attr("stride", {2, 2}), dims_attr("input_shape", {1, 2, 6, 6})}),
            (std::vector<TensorType>{{f, {1, 2, 6, 6}}}));
  EXPECT_EQ(types(OpKind::slice_grad, {{DType::i64, {2, 3}}},
                  {dim_attr("axis", -1), dim_attr("start", 2), dim_attr("size", 5)}),
            (std::vector<TensorType>{{DType::i64, {2, 5}}}));
}

TEST(BackwardOps, ArePure) {
  for (OpKind op : {OpKind::broadcast_to, OpKind::sum_to, OpKind::relu_grad, OpKind::gelu_grad,
                    OpKind::gelu_erf_grad, OpKind::silu_grad, OpKind::softmax_grad,
                    OpKind::log_softmax_grad, OpKind::layernorm_grad, OpKind::rmsnorm_grad, OpKind::attention_grad,
                    OpKind::embedding_grad, OpKind::slice_grad, OpKind::reduce_max_grad, OpKind::conv2d_grad_input,
                    OpKind::conv2d_grad_weight,
                    OpKind::max_pool2d_grad, OpKind::avg_pool2d_grad, OpKind::cross_entropy_grad})
    EXPECT_TRUE(op_info(op).pure) << op_name(op);
}

// ---------------------------------------------------------------------------
// Cost rules: the convolution gradients cost the forward's FLOPs; the
// embedding gradient moves g, the ids and the whole table.

TEST(BackwardCostRules, FollowTheForward) {
  const DType f = DType::f32;
  const OpAttrs conv = make_attrs({dims_attr("stride", {2, 2}), dims_attr("padding", {1, 1})});
  const TensorType x{f, {2, 3, 8, 8}}, w{f, {4, 3, 3, 3}}, y{f, {2, 4, 4, 4}};
  const std::vector<TensorType> fwd_in = {x, w}, fwd_out = {y};
  const int64_t forward_flops = op_info(OpKind::conv2d).cost(fwd_in, fwd_out, conv).flops;
  ASSERT_EQ(forward_flops, 2 * y.numel() * 3 * 3 * 3);
  const std::vector<TensorType> gi_in = {y, w}, gi_out = {x}, gw_in = {y, x}, gw_out = {w};
  EXPECT_EQ(op_info(OpKind::conv2d_grad_input).cost(gi_in, gi_out, conv).flops, forward_flops);
  EXPECT_EQ(op_info(OpKind::conv2d_grad_weight).cost(gw_in, gw_out, conv).flops, forward_flops);
  const TensorType g{f, {2, 3, 8}}, ids{DType::i32, {2, 3}}, table{f, {50, 8}};
  const std::vector<TensorType> e_in = {g, ids}, e_out = {table};
  EXPECT_EQ(op_info(OpKind::embedding_grad).cost(e_in, e_out, OpAttrs{}).bytes,
            g.bytes() + ids.bytes() + table.bytes());
}

// Attention counts its products as matmul does: q k^T and p v, 2 T*T*D
// FLOPs each per head, half of them under a causal mask; the backward five
// such products. Its bytes are its operands and results: no T x T scores.
TEST(BackwardCostRules, AttentionCountsItsProductsAsMatmulDoes) {
  const DType f = DType::f32;
  const TensorType q{f, {2, 3, 16, 8}}, lse{f, {2, 3, 16}}, scores{f, {2, 3, 16, 16}};
  const std::vector<TensorType> in = {q, q, q}, out = {q, lse};
  const std::vector<TensorType> qk_in = {q, q}, qk_out = {scores}, pv_in = {scores, q}, pv_out = {q};
  const OpAttrs tb = make_attrs({bool_attr("transpose_b", true)});
  const int64_t products = op_info(OpKind::matmul).cost(qk_in, qk_out, tb).flops +
                           op_info(OpKind::matmul).cost(pv_in, pv_out, OpAttrs{}).flops;
  ASSERT_EQ(products, 4 * 2 * 3 * 16 * 16 * 8);
  const OpCost full = op_info(OpKind::attention).cost(in, out, OpAttrs{});
  EXPECT_EQ(full.flops, products);
  EXPECT_EQ(full.bytes, 4 * q.bytes() + lse.bytes());
  const OpAttrs causal = make_attrs({bool_attr("causal", true)});
  EXPECT_EQ(op_info(OpKind::attention).cost(in, out, causal).flops, products / 2);
  const std::vector<TensorType> g_in = {q, q, q, q, q, lse}, g_out = {q, q, q};
  EXPECT_EQ(op_info(OpKind::attention_grad).cost(g_in, g_out, causal).flops, 5 * products / 4);
  EXPECT_EQ(op_info(OpKind::attention_grad).cost(g_in, g_out, causal).bytes, 8 * q.bytes() + lse.bytes());
}

}  // namespace
}  // namespace pf::cpu
