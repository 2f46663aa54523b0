// The cases of the backward ops but attention_grad's, which stand with attention's.
#include <cmath>
#include <numbers>
#include <utility>
#include <vector>

#include "tests/cpu/every_op/cases.h"
#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

void add_backward_cases(std::vector<OpCase>& cs, Gen& g, const MoeRoutes& routes) {
  const DType f64 = DType::f64;
  auto add = [&](OpKind op, Case c) { cs.push_back({op, std::move(c)}); };
  const Tensor &router = routes.router, &dropless = routes.dropless, &dropping = routes.dropping;
  const Tensor& switched = routes.switched;
  const Reference same_as_broadcast = unary_ref([](double v) { return v; });  // map_ref broadcasts
  struct Bc {
    const char* name;
    Tensor x;
    Shape shape;
  };
  for (const Bc& b : std::vector<Bc>{{"column to 3-D", g.uniform({3, 1}), {2, 3, 4}},
                                     {"scalar", g.uniform({}), {2, 3}},
                                     {"row, leading axis added", g.uniform({9}), {3, 9}},
                                     {"same shape", g.uniform({2, 5}), {2, 5}},
                                     {"middle axis stretched", g.uniform({2, 1, 3}), {2, 4, 3}},
                                     {"i32", g.ints(DType::i32, {1, 3}, -9, 9), {2, 3}},
                                     {"bool", g.bools({4, 1}), {4, 2}}})
    add(OpKind::broadcast_to, {b.name, {b.x}, {dims_attr("shape", b.shape)}, {}, same_as_broadcast});
  struct St {
    const char* name;
    Shape x, shape;
  };
  for (const St& s : std::vector<St>{{"to a column", {2, 3, 4}, {3, 1}},
                                     {"to the last axis (a bias gradient)", {2, 3, 9}, {9}},
                                     {"to a scalar", {2, 3}, {}},
                                     {"outer and inner kept as 1", {4, 3, 5}, {1, 3, 1}},
                                     {"unchanged", {2, 5}, {2, 5}},
                                     {"size-1 axes of x", {2, 1, 5}, {1, 1, 5}},
                                     {"empty x", {3, 0}, {1}}})
    add(OpKind::sum_to, {s.name, {g.uniform(s.x)}, {dims_attr("shape", s.shape)}, {}, sum_to_ref});

  add(OpKind::relu_grad,
      {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -4, 4)}, {}, {}, binary_ref([](double gv, double x) {
         return x > 0 ? gv : 0.0;
       })});
  const Reference gelu_grad_ref = binary_ref([](double gv, double x) { return gv * gelu_derivative(x); });
  add(OpKind::gelu_grad, {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -4, 4)}, {}, {}, gelu_grad_ref});
  add(OpKind::gelu_erf_grad,
      {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -4, 4)}, {}, {}, binary_ref([](double gv, double x) {
         return gv * (0.5 * (1 + std::erf(x / std::numbers::sqrt2)) +
                      x * std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi));
       })});
  const Reference silu_grad_ref = binary_ref([](double gv, double x) {
    const double s = 1 / (1 + std::exp(-x));
    return gv * (s + x * s * (1 - s));
  });
  add(OpKind::silu_grad, {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -8, 8)}, {}, {}, silu_grad_ref});
  add(OpKind::gelu_grad, {"far tails (x^3 overflows f32 at 1e20)",
                          {g.uniform({10}), values(f64, {10}, {-1e20, -40, -12, -9, -6, 6, 9, 12, 40, 1e20})},
                          {},
                          {},
                          gelu_grad_ref});

  for (OpKind op : {OpKind::softmax_grad, OpKind::log_softmax_grad}) {
    const bool log = op == OpKind::log_softmax_grad;
    const Tensor x1 = g.uniform({3, 11}, -5, 5), x2 = g.uniform({2, 5, 6}, -5, 5), x3 = g.uniform({4, 3, 2}, -5, 5);
    add(op, {"last axis (default)", {g.uniform({3, 11}), softmax_of(x1, -1, log)}, {}, {}, softmax_grad_ref(-1, log)});
    add(op, {"middle axis",
             {g.uniform({2, 5, 6}), softmax_of(x2, 1, log)},
             {dim_attr("axis", 1)},
             {},
             softmax_grad_ref(1, log)});
    add(op, {"first axis",
             {g.uniform({4, 3, 2}), softmax_of(x3, 0, log)},
             {dim_attr("axis", -3)},
             {},
             softmax_grad_ref(0, log)});
  }

  add(OpKind::layernorm_grad, {"default eps",
                               {g.uniform({2, 3, 10}), g.uniform({2, 3, 10}), g.uniform({10})},
                               {},
                               {},
                               norm_grad_ref(1e-5, false)});
  add(OpKind::layernorm_grad, {"eps and a large mean",
                               {g.uniform({4, 9}), g.uniform({4, 9}, 99, 101), g.uniform({9})},
                               {real_attr("eps", 1e-3)},
                               {},
                               norm_grad_ref(1e-3, false)});
  add(OpKind::rmsnorm_grad,
      {"default eps", {g.uniform({3, 12}), g.uniform({3, 12}), g.uniform({12})}, {}, {}, norm_grad_ref(1e-6, true)});
  add(OpKind::rmsnorm_grad, {"eps",
                             {g.uniform({2, 2, 5}), g.uniform({2, 2, 5}), g.uniform({5})},
                             {real_attr("eps", 0.1)},
                             {},
                             norm_grad_ref(0.1, true)});

  add(OpKind::embedding_grad, {"i32 ids, repeated",
                               {g.uniform({2, 3, 4}), values(DType::i32, {2, 3}, {0, 9, 3, 3, 1, 9})},
                               {dim_attr("rows", 10)},
                               {},
                               embedding_grad_ref});
  add(OpKind::embedding_grad,
      {"i64 ids", {g.uniform({5, 3}), g.ints(DType::i64, {5}, 0, 5)}, {dim_attr("rows", 6)}, {}, embedding_grad_ref});
  add(OpKind::embedding_grad, {"rows 3..6 of 9, repeated ids inside",
                               {g.uniform({2, 3, 4}), values(DType::i64, {2, 3}, {3, 0, 5, 5, 8, 6})},
                               {dim_attr("rows", 3), dim_attr("offset", 3), dim_attr("vocab", 9)},
                               {},
                               embedding_share_grad_ref(3)});

  add(OpKind::moe_gates_grad, {"top 2, dropless",
                               {g.uniform({4, 7}), router, dropless},
                               {dim_attr("top_k", 2)},
                               {},
                               moe_gates_grad_ref(2, true)});
  add(OpKind::moe_gates_grad, {"top 2, dropped choices",
                               {g.uniform({4, 3}), router, dropping},
                               {dim_attr("top_k", 2)},
                               {},
                               moe_gates_grad_ref(2, true)});
  add(OpKind::moe_gates_grad, {"switch",
                               {g.uniform({4, 3}), router, switched},
                               {dim_attr("top_k", 1), bool_attr("renormalize", false)},
                               {},
                               moe_gates_grad_ref(1, false)});

  add(OpKind::slice_grad, {"middle axis",
                           {g.uniform({3, 3, 4})},
                           {dim_attr("axis", 1), dim_attr("start", 1), dim_attr("size", 5)},
                           {},
                           slice_grad_ref(1, 1)});
  add(OpKind::slice_grad, {"last axis, at the end",
                           {g.uniform({3, 3})},
                           {dim_attr("axis", -1), dim_attr("start", 2), dim_attr("size", 5)},
                           {},
                           slice_grad_ref(-1, 2)});
  add(OpKind::slice_grad, {"first axis, i64",
                           {g.ints(DType::i64, {2, 3}, -5, 5)},
                           {dim_attr("axis", 0), dim_attr("start", 1), dim_attr("size", 4)},
                           {},
                           slice_grad_ref(0, 1)});

  struct Rmg {
    const char* name;
    Tensor x;
    std::vector<int64_t> axes;
    bool keep;
  };
  for (const Rmg& r : std::vector<Rmg>{{"last axis", g.uniform({2, 3, 9}), {-1}, false},
                                       {"outer and inner, keepdims", g.uniform({2, 3, 4}), {0, 2}, true},
                                       {"first axis (columns)", g.uniform({6, 5}), {0}, false},
                                       {"ties", values(f64, {2, 4}, {1, 3, 3, -1, 2, 2, 2, 2}), {1}, false},
                                       {"ties across columns", values(f64, {3, 2}, {5, 1, 5, 1, 4, 0.5}), {0}, true}}) {
    std::vector<OpAttrs::Entry> attrs = {dims_attr("axes", r.axes)};
    if (r.keep) attrs.push_back(bool_attr("keepdims", true));
    const Tensor y = reduce_max_of(r.x, r.axes, r.keep);
    add(OpKind::reduce_max_grad, {r.name, {g.uniform(y.type.shape), r.x, y}, attrs, {}, reduce_max_grad_ref(r.axes)});
  }

  struct Cg {
    const char* name;
    Shape x, w;
    std::vector<int64_t> stride, pad;
    int64_t groups;
  };
  for (const Cg& c : std::vector<Cg>{{"groups, stride, padding", {2, 4, 5, 6}, {6, 2, 3, 3}, {2, 1}, {1, 1}, 2},
                                     {"1x1 (direct)", {2, 3, 4, 4}, {5, 3, 1, 1}, {1, 1}, {0, 0}, 1},
                                     {"depthwise", {1, 3, 5, 5}, {3, 1, 3, 3}, {1, 1}, {1, 1}, 3},
                                     {"rectangular kernel", {1, 3, 6, 7}, {4, 3, 2, 3}, {1, 2}, {0, 1}, 1},
                                     {"1x1 strided", {1, 2, 5, 5}, {2, 2, 1, 1}, {2, 2}, {0, 0}, 1},
                                     {"last rows unread", {1, 2, 6, 6}, {3, 2, 3, 3}, {2, 2}, {0, 0}, 1}}) {
    const std::vector<OpAttrs::Entry> conv_attrs = {dims_attr("stride", c.stride), dims_attr("padding", c.pad),
                                                    dim_attr("groups", c.groups)};
    // The gradient has the forward's output shape.
    const Shape gs = {c.x[0], c.w[0], (c.x[2] + 2 * c.pad[0] - c.w[2]) / c.stride[0] + 1,
                      (c.x[3] + 2 * c.pad[1] - c.w[3]) / c.stride[1] + 1};
    std::vector<OpAttrs::Entry> in_attrs = conv_attrs, w_attrs = conv_attrs;
    in_attrs.push_back(dims_attr("input_shape", c.x));
    w_attrs.push_back(dims_attr("weight_shape", c.w));
    add(OpKind::conv2d_grad_input,
        {c.name, {g.uniform(gs), g.uniform(c.w)}, in_attrs, {}, conv2d_grad_ref(c.stride, c.pad, c.groups, true)});
    add(OpKind::conv2d_grad_weight,
        {c.name, {g.uniform(gs), g.uniform(c.x)}, w_attrs, {}, conv2d_grad_ref(c.stride, c.pad, c.groups, false)});
  }

  struct Pg {
    const char* name;
    Shape x;
    std::vector<int64_t> kernel, stride, pad;
    bool defaults;  // stride and padding left to their defaults
  };
  for (const Pg& p : std::vector<Pg>{{"2x2, stride defaults to kernel", {2, 3, 6, 7}, {2, 2}, {2, 2}, {0, 0}, true},
                                     {"3x3 stride 2 padding 1", {1, 2, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false},
                                     {"rectangular, overlapping", {1, 1, 5, 6}, {2, 3}, {1, 1}, {1, 0}, false}}) {
    std::vector<OpAttrs::Entry> attrs = {dims_attr("kernel", p.kernel)};
    if (!p.defaults) {
      attrs.push_back(dims_attr("stride", p.stride));
      attrs.push_back(dims_attr("padding", p.pad));
    }
    const Shape gs = {p.x[0], p.x[1], (p.x[2] + 2 * p.pad[0] - p.kernel[0]) / p.stride[0] + 1,
                      (p.x[3] + 2 * p.pad[1] - p.kernel[1]) / p.stride[1] + 1};
    add(OpKind::max_pool2d_grad,
        {p.name, {g.uniform(gs), g.uniform(p.x)}, attrs, {}, pool_grad_ref(p.kernel, p.stride, p.pad, true)});
    attrs.push_back(dims_attr("input_shape", p.x));
    add(OpKind::avg_pool2d_grad, {p.name, {g.uniform(gs)}, attrs, {}, pool_grad_ref(p.kernel, p.stride, p.pad, false)});
  }
  // Ties and a plateau of equal values: each window's first maximum wins.
  add(OpKind::max_pool2d_grad,
      {"ties, overlapping windows",
       {g.uniform({1, 1, 2, 3}), values(f64, {1, 1, 3, 4}, {1, 4, 4, 0, 4, 2, 4, 4, 3, 3, 3, 3})},
       {dims_attr("kernel", {2, 2}), dims_attr("stride", {1, 1})},
       {},
       pool_grad_ref({2, 2}, {1, 1}, {0, 0}, true)});

  add(OpKind::cross_entropy_grad,
      {"default ignore_index -100, i64",
       {g.uniform({}), g.uniform({2, 3, 5}, -4, 4), values(DType::i64, {2, 3}, {0, 4, -100, 2, 2, 1})},
       {},
       {},
       cross_entropy_grad_ref(-100)});
  add(OpKind::cross_entropy_grad, {"ignore_index 2, i32",
                                   {g.uniform({}), g.uniform({4, 7}, -4, 4), values(DType::i32, {4}, {2, 6, 0, 2})},
                                   {dim_attr("ignore_index", 2)},
                                   {},
                                   cross_entropy_grad_ref(2)});
  add(OpKind::cross_entropy_grad, {"every target ignored",
                                   {g.uniform({}), g.uniform({2, 3}), values(DType::i32, {2}, {-100, -100})},
                                   {},
                                   {},
                                   cross_entropy_grad_ref(-100)});
  add(OpKind::cross_entropy_grad,
      {"one row", {g.uniform({}), g.uniform({6}), values(DType::i64, {}, {5})}, {}, {}, cross_entropy_grad_ref(-100)});
  add(OpKind::cross_entropy_parts_grad,
      {"classes 5..10 of 15",
       {g.uniform({2, 3, 2}), g.uniform({2, 3, 5}, -4, 4), g.uniform({2, 3}, -1, 1),
        values(DType::i32, {2, 3}, {5, 9, 0, 14, -100, 7})},
       {dim_attr("offset", 5), dim_attr("vocab", 15)},
       {},
       cross_entropy_parts_grad_ref(5)});
  add(OpKind::cross_entropy_total_grad,
      {"ignore_index 2",
       {g.uniform({}), g.uniform({4, 2}, 0.5, 3), values(DType::i64, {4}, {2, 6, 0, 2})},
       {dim_attr("ignore_index", 2)},
       {},
       cross_entropy_total_grad_ref(2)});
  add(OpKind::cross_entropy_total_grad,
      {"every target ignored", {g.uniform({}), g.uniform({2, 2}, 0.5, 3), values(DType::i32, {2}, {-100, -100})}, {},
       {}, cross_entropy_total_grad_ref(-100)});
}

}  // namespace pf::cpu::every_op
