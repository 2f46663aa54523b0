// Every CUDA kernel against the CPU kernel on the same inputs (f32, and bf16 where the CUDA backend has it), one test per op.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cuda/device.h"
#include "backends/cuda/kernels.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/op_attr_entries.h"
#include "tests/tensor_bytes.h"

namespace pf::cuda {
namespace {

using testing_support::tensor_bytes;
using testing_support::tensor_values;

/// tp_reduce over a group of one rank: on either backend, its operand.
backend::TensorParallelGroup& alone() {
  static backend::SingleRankGroup group;
  return group;
}

// A case is run by the CPU's f32 kernel and by the CUDA kernel on the same
// bytes; results are compared with a tolerance by dtype. CUDA results are
// poisoned first (all bytes 0xFF) so that an element a kernel forgets shows
// up. bf16 runs feed both sides values rounded to bf16 (the CPU computes in
// f32 on them) and compare the CUDA bf16 result, widened, with the CPU's.

// ---------------------------------------------------------------------------
// Tensors and attributes of a case.

struct Tensor {
  TensorType type;          // floats as f32; the bf16 run retypes them
  std::vector<double> v;    // row-major
};

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  Tensor uniform(Shape s, double lo = -2, double hi = 2) {
    Tensor t{{DType::f32, std::move(s)}, {}};
    std::uniform_real_distribution<double> u(lo, hi);
    for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<float>(u(rng_)));
    return t;
  }
  Tensor ints(DType dt, Shape s, int64_t lo, int64_t hi) {
    Tensor t{{dt, std::move(s)}, {}};
    std::uniform_int_distribution<int64_t> u(lo, hi);
    for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<double>(u(rng_)));
    return t;
  }
  // Small integers stored as floats: reductions with ties.
  Tensor steps(Shape s, int64_t lo, int64_t hi) {
    Tensor t = ints(DType::i32, std::move(s), lo, hi);
    t.type.dtype = DType::f32;
    return t;
  }
  Tensor bools(Shape s) { return ints(DType::boolean, std::move(s), 0, 1); }

 private:
  std::mt19937_64 rng_;
};

// Chosen values (ids, targets) where drawn ones would miss the edges.
Tensor listed(DType dt, Shape s, std::vector<double> v) { return {{dt, std::move(s)}, std::move(v)}; }

// Short names for the shared builders: the cases below list many.
OpAttrs::Entry entry(std::string_view name, AttrKind kind) { return testing_support::attr_entry(name, kind); }
OpAttrs::Entry dim(std::string_view name, int64_t v) { return testing_support::dim_attr(name, v); }
OpAttrs::Entry dims(std::string_view name, std::vector<int64_t> v) {
  return testing_support::dims_attr(name, std::move(v));
}
OpAttrs::Entry real(std::string_view name, double v) { return testing_support::real_attr(name, v); }
OpAttrs::Entry boolean(std::string_view name, bool v) { return testing_support::bool_attr(name, v); }
OpAttrs::Entry dtype(std::string_view name, DType v) { return testing_support::dtype_attr(name, v); }

struct Case {
  OpKind op;
  std::string name;
  std::vector<Tensor> in;
  std::vector<OpAttrs::Entry> attrs = {};
  std::vector<TensorType> declared = {};
};

// Logits [tokens, E] under which token n's k-th choice is expert
// (n top_k + k) mod E (the others drawn below them), and the route moe_route
// makes of them with `capacity` slots an expert: first choices first, each
// in token order.
struct Routed {
  Tensor logits, route;
};
Routed routed(Gen& g, int64_t tokens, int64_t experts, int64_t top_k, int64_t capacity) {
  Routed r{g.uniform({tokens, experts}, -1, 1), listed(DType::i32, {experts, capacity}, {})};
  r.route.v.assign(static_cast<size_t>(experts * capacity), -1.0);
  std::vector<int64_t> filled(static_cast<size_t>(experts), 0);
  for (int64_t k = 0; k < top_k; ++k)
    for (int64_t n = 0; n < tokens; ++n) {
      const int64_t e = (n * top_k + k) % experts;
      r.logits.v[n * experts + e] = static_cast<double>(2 + top_k - k);
      if (filled[e] < capacity) r.route.v[e * capacity + filled[e]++] = static_cast<double>(n);
    }
  return r;
}

// Every op of ops.def that the CPU runs, at least once, with broadcasting,
// non-last axes, groups, padding and ignored targets where the op has them.
std::vector<Case> all_cases() {
  Gen g(7);
  std::vector<Case> c;
  c.push_back({OpKind::constant, "f32", {}, {real("value", 1.5)}, {{DType::f32, {2, 3}}}});
  c.push_back({OpKind::constant, "i32", {}, {real("value", -3.7)}, {{DType::i32, {5}}}});
  c.push_back({OpKind::dim_value, "scalar", {}, {dim("value", 7)}, {{DType::f32, {}}}});
  c.push_back({OpKind::causal_mask, "batched", {}, {}, {{DType::boolean, {2, 5, 5}}}});
  c.push_back({OpKind::matmul, "shared_b", {g.uniform({2, 3, 4}), g.uniform({4, 5})}});
  c.push_back({OpKind::matmul, "transposed_broadcast", {g.uniform({2, 1, 4, 3}), g.uniform({3, 5, 4})},
               {boolean("transpose_a", true), boolean("transpose_b", true)}});
  c.push_back({OpKind::add, "bias", {g.uniform({2, 3, 4}), g.uniform({4})}});
  c.push_back({OpKind::sub, "both_broadcast", {g.uniform({2, 1, 4}), g.uniform({3, 1})}});
  c.push_back({OpKind::mul, "same_shape", {g.uniform({3, 5}), g.uniform({3, 5})}});
  c.push_back({OpKind::div, "scalar", {g.uniform({3, 5}), g.uniform({}, 0.5, 2)}});
  c.push_back({OpKind::where, "three_way", {g.bools({2, 3, 1}), g.uniform({3, 4}), g.uniform({1})}});
  for (OpKind op : {OpKind::neg, OpKind::exp, OpKind::tanh, OpKind::sigmoid, OpKind::relu, OpKind::gelu, OpKind::gelu_erf,
                    OpKind::silu})
    c.push_back({op, "signed", {g.uniform({3, 17}, -6, 6)}});
  for (OpKind op : {OpKind::log, OpKind::sqrt, OpKind::rsqrt}) c.push_back({op, "positive", {g.uniform({3, 17}, 0.1, 4)}});
  c.push_back({OpKind::pow, "cube", {g.uniform({3, 5})}, {real("exponent", 3)}});
  c.push_back({OpKind::pow, "real", {g.uniform({3, 5}, 0.1, 3)}, {real("exponent", 1.7)}});
  c.push_back({OpKind::dropout, "p03", {g.uniform({4, 100})}, {real("p", 0.3), dim("seed", 42)}});
  c.push_back({OpKind::cast, "f32_to_i32", {g.uniform({3, 4}, -9, 9)}, {dtype("to", DType::i32)}});
  c.push_back({OpKind::cast, "i64_to_f32", {g.ints(DType::i64, {5}, -100, 100)}, {dtype("to", DType::f32)}});
  c.push_back({OpKind::cast, "f32_to_bool", {g.steps({6}, -1, 1)}, {dtype("to", DType::boolean)}});
  for (OpKind op : {OpKind::softmax, OpKind::log_softmax}) {
    c.push_back({op, "last_axis", {g.uniform({3, 300}, -5, 5)}, {dim("axis", -1)}});
    c.push_back({op, "middle_axis", {g.uniform({2, 5, 3})}, {dim("axis", 1)}});
  }
  c.push_back({OpKind::layernorm, "rows", {g.uniform({4, 96}, 1, 3), g.uniform({96}), g.uniform({96})},
               {real("eps", 1e-5)}});
  c.push_back({OpKind::rmsnorm, "rows", {g.uniform({4, 96}), g.uniform({96})}, {real("eps", 1e-6)}});
  c.push_back({OpKind::rope, "bhtd", {g.uniform({2, 3, 7, 8})}, {real("theta", 500)}});
  c.push_back({OpKind::rope, "bthd_inverse", {g.uniform({2, 7, 3, 4})}, {dim("axis", 1), boolean("inverse", true)}});
  c.push_back({OpKind::rope, "i64_positions", {g.uniform({2, 4, 6}), g.ints(DType::i64, {4}, 0, 5000)}});
  c.push_back({OpKind::embedding, "i32_ids", {g.uniform({10, 6}), g.ints(DType::i32, {2, 3}, 0, 9)}});
  c.push_back({OpKind::embedding, "i64_ids", {g.uniform({10, 6}), g.ints(DType::i64, {4}, 0, 9)}});
  // A rank's share of a vocabulary of 12, rows 3..7: ids below, inside
  // (both ends) and above it; those of other ranks gather zeros.
  const Tensor share_ids = listed(DType::i64, {2, 4}, {0, 3, 6, 7, 11, 4, 5, 2});
  c.push_back({OpKind::embedding, "vocab_share", {g.uniform({4, 6}), share_ids}, {dim("offset", 3), dim("vocab", 12)}});
  c.push_back({OpKind::reshape, "flat", {g.uniform({2, 6})}, {dims("shape", {3, 4})}});
  c.push_back({OpKind::tp_copy, "one rank", {g.uniform({2, 6})}});
  c.push_back({OpKind::tp_reduce, "one rank", {g.uniform({3, 5})}});
  c.push_back({OpKind::tp_max, "one rank", {g.uniform({3, 5})}});
  for (OpKind op : {OpKind::tp_reduce_scatter, OpKind::tp_all_gather, OpKind::tp_scatter, OpKind::tp_gather,
                    OpKind::ep_all_gather, OpKind::ep_reduce_scatter})
    c.push_back({op, "one rank", {g.uniform({2, 3, 4})}, {dim("axis", 1), dim("size", 3), dim("rank", 0), dim("ranks", 1)}});
  c.push_back({OpKind::transpose, "rotate", {g.uniform({2, 3, 4})}, {dims("perm", {2, 0, 1})}});
  c.push_back({OpKind::transpose, "i64_swap", {g.ints(DType::i64, {3, 5}, -9, 9)}, {dims("perm", {1, 0})}});
  c.push_back({OpKind::slice, "middle", {g.uniform({2, 4, 3})}, {dim("axis", 1), dim("start", 1), dim("end", 3)}});
  c.push_back({OpKind::concat, "middle", {g.uniform({2, 2, 3}), g.uniform({2, 1, 3})}, {dim("axis", 1)}});
  c.push_back({OpKind::split, "rows", {g.uniform({3, 4})}, {dim("axis", 0), dims("sizes", {1, 2})}});
  c.push_back({OpKind::reduce_sum, "outer_and_inner", {g.uniform({3, 4, 5})}, {dims("axes", {0, 2})}});
  c.push_back({OpKind::reduce_sum, "long_rows", {g.uniform({3, 2000})}, {dims("axes", {1})}});
  c.push_back({OpKind::reduce_mean, "keepdims", {g.uniform({3, 4, 5})}, {dims("axes", {1}), boolean("keepdims", true)}});
  c.push_back({OpKind::reduce_max, "last", {g.uniform({3, 4, 5})}, {dims("axes", {-1})}});
  c.push_back({OpKind::conv2d, "groups_padding_bias",
               {g.uniform({2, 4, 6, 6}), g.uniform({6, 2, 3, 3}), g.uniform({6})},
               {dims("stride", {1, 1}), dims("padding", {1, 1}), dim("groups", 2)}});
  c.push_back({OpKind::conv2d, "strided", {g.uniform({1, 3, 7, 7}), g.uniform({4, 3, 3, 3})}, {dims("stride", {2, 2})}});
  const std::vector<OpAttrs::Entry> pool = {dims("kernel", {3, 3}), dims("stride", {2, 2}), dims("padding", {1, 1})};
  c.push_back({OpKind::max_pool2d, "padded", {g.uniform({1, 2, 5, 5})}, pool});
  c.push_back({OpKind::avg_pool2d, "padded", {g.uniform({1, 2, 5, 5})}, pool});
  Tensor targets = g.ints(DType::i32, {4}, 0, 4);
  targets.v[2] = -100;
  c.push_back({OpKind::cross_entropy, "ignored_target", {g.uniform({4, 5}), targets}});
  // A rank's classes 5..10 of a vocabulary of 15 (so rows of 5 logits): its
  // targets, another rank's below and above, and ignored ones. The maximum
  // is the group's: at least each row's own, and above it where another
  // rank holds a larger logit.
  const std::vector<OpAttrs::Entry> share = {dim("offset", 5), dim("vocab", 15)};
  const Tensor share_targets = listed(DType::i64, {2, 3}, {5, 9, -100, 0, 14, 7});
  auto group_max = [&](const Tensor& logits, double above) {
    const int64_t v = logits.type.shape.back();
    Shape rows(logits.type.shape.begin(), logits.type.shape.end() - 1);
    Tensor m{{DType::f32, rows}, {}};
    for (int64_t r = 0; r < logits.type.numel() / v; ++r)
      m.v.push_back(static_cast<float>(*std::max_element(logits.v.begin() + r * v, logits.v.begin() + (r + 1) * v) +
                                       (r % 2 ? above : 0)));
    return m;
  };
  {
    const Tensor logits = g.uniform({2, 3, 5});
    c.push_back({OpKind::cross_entropy_parts, "vocab_share", {logits, group_max(logits, 0.75), share_targets}, share});
    c.push_back({OpKind::cross_entropy_parts_grad, "vocab_share",
                 {g.uniform({2, 3, 2}), logits, group_max(logits, 0.75), share_targets}, share});
    // Rows longer than a block, the whole vocabulary on one rank, i32
    // targets and another ignore_index.
    Tensor long_targets = g.ints(DType::i32, {3}, 0, 699);
    long_targets.v[1] = 3;
    const Tensor long_logits = g.uniform({3, 700}, -5, 5);
    c.push_back({OpKind::cross_entropy_parts, "long_rows", {long_logits, group_max(long_logits, 0), long_targets},
                 {dim("ignore_index", 3)}});
    c.push_back({OpKind::cross_entropy_parts_grad, "long_rows",
                 {g.uniform({3, 2}), long_logits, group_max(long_logits, 0), long_targets}, {dim("ignore_index", 3)}});
  }
  // Parts as the group's sum leaves them: a sum of exponentials that holds
  // the maximum's exp(0) = 1, and a target logit at most that maximum.
  auto summed_parts = [&](const Shape& rows) {
    const Tensor sums = g.uniform(rows, 1, 8), picks = g.uniform(rows, -3, 0);
    Shape shape = rows;
    shape.push_back(2);
    Tensor p{{DType::f32, shape}, {}};
    for (size_t r = 0; r < sums.v.size(); ++r) {
      p.v.push_back(sums.v[r]);
      p.v.push_back(picks.v[r]);
    }
    return p;
  };
  {
    const Tensor parts = summed_parts({2, 3});
    c.push_back({OpKind::cross_entropy_total, "ignored_target", {parts, share_targets}});
    c.push_back({OpKind::cross_entropy_total_grad, "ignored_target", {g.uniform({}, 0.5, 2), parts, share_targets}});
    // No row counts: a loss of 0 and no gradient.
    const Tensor none = listed(DType::i32, {4}, {7, 7, 7, 7});
    const Tensor none_parts = summed_parts({4});
    c.push_back({OpKind::cross_entropy_total, "all_ignored", {none_parts, none}, {dim("ignore_index", 7)}});
    c.push_back({OpKind::cross_entropy_total_grad, "all_ignored", {g.uniform({}, 0.5, 2), none_parts, none},
                 {dim("ignore_index", 7)}});
  }
  c.push_back({OpKind::mse_loss, "plain", {g.uniform({3, 4}), g.uniform({3, 4})}});
  c.push_back({OpKind::broadcast_to, "two_axes", {g.uniform({3, 1})}, {dims("shape", {2, 3, 4})}});
  c.push_back({OpKind::sum_to, "two_axes", {g.uniform({2, 3, 4})}, {dims("shape", {3, 1})}});
  // Few columns over many rows: summed in chunks of rows, then the chunks.
  c.push_back({OpKind::sum_to, "bias_gradient", {g.uniform({3, 700, 5})}, {dims("shape", {5})}});
  c.push_back({OpKind::reduce_max, "long_columns", {g.uniform({400, 6})}, {dims("axes", {0})}});
  c.push_back({OpKind::relu_grad, "signed", {g.uniform({3, 5}), g.uniform({3, 5})}});
  c.push_back({OpKind::gelu_grad, "signed", {g.uniform({3, 5}), g.uniform({3, 5}, -6, 6)}});
  c.push_back({OpKind::gelu_erf_grad, "signed", {g.uniform({3, 5}), g.uniform({3, 5}, -6, 6)}});
  c.push_back({OpKind::silu_grad, "signed", {g.uniform({3, 5}), g.uniform({3, 5}, -6, 6)}});
  c.push_back({OpKind::softmax_grad, "last_axis", {g.uniform({3, 7}), g.uniform({3, 7}, 0, 1)}, {dim("axis", -1)}});
  c.push_back({OpKind::softmax_grad, "middle_axis", {g.uniform({2, 5, 3}), g.uniform({2, 5, 3}, 0, 1)}, {dim("axis", 1)}});
  c.push_back({OpKind::log_softmax_grad, "last_axis", {g.uniform({3, 7}), g.uniform({3, 7}, -3, 0)}, {dim("axis", -1)}});
  c.push_back({OpKind::layernorm_grad, "rows", {g.uniform({5, 32}), g.uniform({5, 32}), g.uniform({32})}});
  c.push_back({OpKind::rmsnorm_grad, "rows", {g.uniform({5, 32}), g.uniform({5, 32}), g.uniform({32})}});
  c.push_back({OpKind::layernorm_grad, "many_rows", {g.uniform({600, 24}), g.uniform({600, 24}), g.uniform({24})}});
  c.push_back({OpKind::rmsnorm_grad, "many_rows", {g.uniform({600, 24}), g.uniform({600, 24}), g.uniform({24})}});
  c.push_back({OpKind::embedding_grad, "repeated_ids", {g.uniform({2, 3, 6}), g.ints(DType::i32, {2, 3}, 0, 3)},
               {dim("rows", 10)}});
  // Rows 4..7 of a vocabulary of 9, one named twice: ids of other ranks add nothing.
  const Tensor grad_share_ids = listed(DType::i32, {2, 4}, {0, 4, 4, 6, 8, 3, 7, 5});
  c.push_back({OpKind::embedding_grad, "vocab_share", {g.uniform({2, 4, 6}), grad_share_ids},
               {dim("rows", 3), dim("offset", 4), dim("vocab", 9)}});
  c.push_back({OpKind::slice_grad, "middle", {g.uniform({2, 2, 3})}, {dim("axis", 1), dim("start", 1), dim("size", 4)}});
  {
    // y must be x's maximum for the ties to mean anything: computed here.
    Tensor x = g.steps({3, 4}, 0, 2);
    Tensor y{{DType::f32, {3}}, {}};
    for (int r = 0; r < 3; ++r) y.v.push_back(*std::max_element(x.v.begin() + r * 4, x.v.begin() + r * 4 + 4));
    c.push_back({OpKind::reduce_max_grad, "ties", {g.uniform({3}), x, y}, {dims("axes", {1})}});
    // Ties counted down long columns, in chunks.
    Tensor xc = g.steps({500, 3}, 0, 4);
    Tensor yc{{DType::f32, {3}}, {}};
    for (int k = 0; k < 3; ++k) {
      double m = xc.v[k];
      for (int r = 0; r < 500; ++r) m = std::max(m, xc.v[r * 3 + k]);
      yc.v.push_back(m);
    }
    c.push_back({OpKind::reduce_max_grad, "ties_down_columns", {g.uniform({3}), xc, yc}, {dims("axes", {0})}});
  }
  const std::vector<OpAttrs::Entry> conv = {dims("stride", {1, 1}), dims("padding", {1, 1}), dim("groups", 2)};
  std::vector<OpAttrs::Entry> conv_in = conv, conv_w = conv;
  conv_in.push_back(dims("input_shape", {2, 4, 6, 6}));
  conv_w.push_back(dims("weight_shape", {6, 2, 3, 3}));
  c.push_back({OpKind::conv2d_grad_input, "groups_padding", {g.uniform({2, 6, 6, 6}), g.uniform({6, 2, 3, 3})}, conv_in});
  c.push_back({OpKind::conv2d_grad_weight, "groups_padding", {g.uniform({2, 6, 6, 6}), g.uniform({2, 4, 6, 6})}, conv_w});
  c.push_back({OpKind::max_pool2d_grad, "padded", {g.uniform({1, 2, 3, 3}), g.steps({1, 2, 5, 5}, 0, 3)}, pool});
  std::vector<OpAttrs::Entry> avg = pool;
  avg.push_back(dims("input_shape", {1, 2, 5, 5}));
  c.push_back({OpKind::avg_pool2d_grad, "padded", {g.uniform({1, 2, 3, 3})}, avg});
  // Attention: rows past one block of 8 query rows and one tile of 32 keys,
  // a head size past one lane's share (D = 40), causal and not, and the
  // default scale, in both layouts ("bthd": q [B, T, H, D], lse still
  // [B, H, T]). The gradient's o and lse need not come from q, k, v: both
  // sides run the same formula on them.
  for (bool bthd : {false, true}) {
    for (bool causal : {true, false}) {
      const Shape s = bthd ? Shape{2, 37, 3, 40} : Shape{2, 3, 37, 40};
      std::vector<OpAttrs::Entry> att = {boolean("causal", causal)};
      if (causal) att.push_back(real("scale", 0.2));
      if (bthd) {
        OpAttrs::Entry layout = entry("layout", AttrKind::string);
        layout.string = "bthd";
        att.push_back(layout);
      }
      const char* name = bthd ? (causal ? "bthd_causal_tiles" : "bthd_full_default_scale")
                              : (causal ? "causal_tiles" : "full_default_scale");
      c.push_back({OpKind::attention, name, {g.uniform(s, -1, 1), g.uniform(s, -1, 1), g.uniform(s, -1, 1)}, att});
      c.push_back({OpKind::attention_grad, name,
                   {g.uniform(s, -1, 1), g.uniform(s, -1, 1), g.uniform(s, -1, 1), g.uniform(s, -1, 1),
                    g.uniform(s, -1, 1), g.uniform({2, 3, 37}, 2, 4)},
                   att});
    }
  }
  c.push_back({OpKind::cross_entropy_grad, "ignored_target", {g.uniform({}, 0.5, 2), g.uniform({4, 5}), targets}});

  // Mixture of experts: 7 tokens over 4 experts, 2 each; every slot (7), or
  // 3 an expert (choices dropped); a block of the experts (a tensor-parallel
  // rank's); Switch's gate (top 1, a softmax over every expert).
  const Tensor router = g.uniform({7, 4}, -3, 3);
  c.push_back({OpKind::moe_route, "dropless", {router}, {dim("top_k", 2)}});
  c.push_back({OpKind::moe_route, "capacity", {router}, {dim("top_k", 2), real("capacity_factor", 0.6)}});
  OpAttrs::Entry probs = entry("drop", AttrKind::string);
  probs.string = "probs";
  c.push_back({OpKind::moe_route, "likeliest_kept", {router}, {dim("top_k", 2), real("capacity_factor", 0.6), probs}});
  c.push_back({OpKind::moe_route, "block", {router}, {dim("top_k", 2), dim("first_expert", 1), dim("experts", 2)}});
  c.push_back({OpKind::moe_load, "top2", {router}, {dim("top_k", 2)}});
  const Routed all = routed(g, 7, 4, 2, 7), dropping = routed(g, 7, 4, 2, 3), switched = routed(g, 7, 4, 1, 3);
  c.push_back({OpKind::moe_gates, "dropless", {all.logits, all.route}, {dim("top_k", 2)}});
  c.push_back({OpKind::moe_gates, "switch", {switched.logits, switched.route},
               {dim("top_k", 1), boolean("renormalize", false)}});
  Tensor block = dropping.route;  // experts 2 and 3
  block.type.shape = {2, 3};
  block.v.erase(block.v.begin(), block.v.begin() + 6);
  c.push_back({OpKind::moe_gates, "block", {dropping.logits, block}, {dim("top_k", 2), dim("first_expert", 2)}});
  c.push_back({OpKind::moe_gates_grad, "dropped_choices",
               {g.uniform({4, 3}), dropping.logits, dropping.route}, {dim("top_k", 2)}});
  c.push_back({OpKind::moe_gates_grad, "block", {g.uniform({2, 3}), dropping.logits, block},
               {dim("top_k", 2), dim("first_expert", 2)}});
  // Experts filling 3, 2, 1 and none of their 3 slots.
  const Tensor uneven = listed(DType::i32, {4, 3}, {0, 2, 4, 1, 3, -1, 5, -1, -1, -1, -1, -1});
  c.push_back({OpKind::moe_dispatch, "empty_slots", {g.uniform({7, 5}), uneven}});
  c.push_back({OpKind::moe_combine, "weighed", {g.uniform({4, 7, 5}), all.route, g.uniform({4, 7})},
               {dim("tokens", 7)}});
  c.push_back({OpKind::moe_combine, "unweighed_token_in_none", {g.uniform({4, 3, 5}), uneven},
               {dim("tokens", 7)}});
  // Rows past an expert's last slot in use hold values here: the products leave them out.
  c.push_back({OpKind::moe_matmul, "slots_in_use", {g.uniform({4, 3, 5}), g.uniform({4, 5, 6}), uneven}});
  c.push_back({OpKind::moe_matmul, "transpose_b", {g.uniform({4, 7, 5}), g.uniform({4, 6, 5}), all.route},
               {boolean("transpose_b", true)}});
  c.push_back({OpKind::moe_matmul, "transpose_a_summed_over_slots_in_use",
               {g.uniform({4, 3, 5}), g.uniform({4, 3, 2}), uneven}, {boolean("transpose_a", true)}});
  c.push_back({OpKind::swiglu, "signed", {g.uniform({3, 17}, -6, 6), g.uniform({3, 17})}});
  c.push_back({OpKind::swiglu, "slots_in_use", {g.uniform({4, 3, 5}, -6, 6), g.uniform({4, 3, 5}), uneven}});
  c.push_back({OpKind::swiglu_grad, "signed", {g.uniform({3, 17}), g.uniform({3, 17}, -6, 6), g.uniform({3, 17})}});
  c.push_back({OpKind::swiglu_grad, "slots_in_use",
               {g.uniform({4, 3, 5}), g.uniform({4, 3, 5}, -6, 6), g.uniform({4, 3, 5}), uneven}});
  return c;
}

// Ops whose bf16 kernels are their own (not byte movers), run a second time
// in bf16: every op of the MLP and GPT examples, forward and backward (a
// bf16 plan runs them all in bf16), but not the convolutions and pools.
const std::set<OpKind> kBf16Ops = {
    OpKind::matmul,         OpKind::add,           OpKind::sub,          OpKind::mul,
    OpKind::div,            OpKind::where,         OpKind::neg,          OpKind::exp,
    OpKind::log,            OpKind::sqrt,          OpKind::rsqrt,        OpKind::pow,
    OpKind::tanh,           OpKind::sigmoid,       OpKind::relu,         OpKind::gelu,
    OpKind::gelu_erf,       OpKind::gelu_erf_grad, OpKind::silu,         OpKind::silu_grad,
    OpKind::dropout,        OpKind::relu_grad,     OpKind::gelu_grad,    OpKind::reduce_sum,
    OpKind::reduce_mean,    OpKind::reduce_max,    OpKind::sum_to,       OpKind::reduce_max_grad,
    OpKind::softmax,        OpKind::log_softmax,   OpKind::softmax_grad, OpKind::log_softmax_grad,
    OpKind::layernorm,      OpKind::rmsnorm,       OpKind::layernorm_grad, OpKind::rmsnorm_grad,
    OpKind::rope,
    OpKind::attention,      OpKind::attention_grad,
    OpKind::embedding,      OpKind::embedding_grad, OpKind::cross_entropy, OpKind::cross_entropy_grad,
    OpKind::cross_entropy_parts, OpKind::cross_entropy_parts_grad, OpKind::cross_entropy_total,
    OpKind::cross_entropy_total_grad, OpKind::mse_loss,
    OpKind::moe_route,      OpKind::moe_gates,     OpKind::moe_gates_grad, OpKind::moe_dispatch,
    OpKind::moe_combine,    OpKind::moe_load,      OpKind::moe_matmul,   OpKind::swiglu,
    OpKind::swiglu_grad};

// ---------------------------------------------------------------------------
// Bytes.

DType retype(DType t, DType floats) { return is_float(t) ? floats : t; }

struct Outcome {
  std::vector<TensorType> types;
  std::vector<std::vector<double>> values;
};

OpAttrs attrs_of(const Case& c, DType floats) {
  OpAttrs attrs;
  for (OpAttrs::Entry e : c.attrs) {
    if (e.kind == AttrKind::dtype) e.dtype = retype(e.dtype, floats);
    attrs.add(e);
  }
  return attrs;
}

// How operand `i` of `c` is stored when floats are stored as `floats`: an
// executor keeps attention's lse in f32 under bf16.
DType operand_dtype(const Case& c, size_t i, DType floats) {
  const DType t = c.in[i].type.dtype;
  return is_float(t) && keeps_f32_operand(c.op, i) ? DType::f32 : retype(t, floats);
}

// The CPU kernel in f32 on values rounded to `floats` (f32 or bf16).
Outcome run_cpu(const Case& c, DType floats) {
  std::vector<TensorType> in_types, declared;
  std::vector<std::vector<std::byte>> in_bytes;
  for (size_t i = 0; i < c.in.size(); ++i) {
    const Tensor& t = c.in[i];
    Tensor r = t;
    if (operand_dtype(c, i, floats) == DType::bf16)
      for (double& v : r.v) v = bf16_to_float(bf16_bits(static_cast<float>(v)));
    in_types.push_back(r.type);
    in_bytes.push_back(tensor_bytes(r.type.dtype, r.v));
  }
  for (const TensorType& t : c.declared) declared.push_back(t);
  const OpAttrs attrs = attrs_of(c, DType::f32);
  Outcome run;
  run.types = op_info(c.op).shape(ShapeContext{op_name(c.op), in_types, attrs, declared});
  std::vector<std::vector<std::byte>> out_bytes;
  for (const TensorType& t : run.types) out_bytes.emplace_back(static_cast<size_t>(std::max<int64_t>(t.bytes(), 1)));
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (auto& b : in_bytes) in_ptrs.push_back(b.data());
  for (auto& b : out_bytes) out_ptrs.push_back(b.data());
  cpu::KernelArgs args{in_types, in_ptrs, run.types, out_ptrs, attrs};
  args.group = &alone();
  args.expert_group = &alone();
  cpu::forward_kernel(c.op, DType::f32)(args);
  for (size_t i = 0; i < run.types.size(); ++i) run.values.push_back(tensor_values(run.types[i], out_bytes[i]));
  return run;
}

// The CUDA kernel with floats stored as `floats`.
Outcome run_cuda(CudaDevice& device, const Case& c, DType floats) {
  using testing::DeviceBuffer;
  std::vector<TensorType> in_types, declared;
  std::vector<DeviceBuffer> ins, outs;
  for (size_t i = 0; i < c.in.size(); ++i) {
    const Tensor& t = c.in[i];
    const DType dt = operand_dtype(c, i, floats);
    in_types.push_back({dt, t.type.shape});
    const std::vector<std::byte> bytes = tensor_bytes(dt, t.v);
    ins.emplace_back(bytes.data(), bytes.size());
  }
  for (const TensorType& t : c.declared) declared.push_back({retype(t.dtype, floats), t.shape});
  const OpAttrs attrs = attrs_of(c, floats);
  Outcome run;
  run.types = op_info(c.op).shape(ShapeContext{op_name(c.op), in_types, attrs, declared});
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (auto& b : ins) in_ptrs.push_back(b.get());
  for (const TensorType& t : run.types) {
    outs.emplace_back(static_cast<size_t>(std::max<int64_t>(t.bytes(), 1)));
    PF_CUDA_CHECK(cudaMemset(outs.back().get(), 0xFF, static_cast<size_t>(std::max<int64_t>(t.bytes(), 1))));
    out_ptrs.push_back(outs.back().get());
  }
  // The executor's choice: the float dtype when any operand or result is a
  // float, else the first result's dtype.
  DType kernel_dtype = run.types[0].dtype;
  for (const TensorType& t : in_types)
    if (is_float(t.dtype)) kernel_dtype = floats;
  for (const TensorType& t : run.types)
    if (is_float(t.dtype)) kernel_dtype = floats;
  LaunchContext ctx = device.context(0);
  ctx.step = 0;
  cpu::KernelArgs args{in_types, in_ptrs, run.types, out_ptrs, attrs};
  args.group = &alone();
  args.expert_group = &alone();
  forward_kernel(c.op, kernel_dtype)(args, ctx);
  device.synchronize(0);
  for (size_t i = 0; i < run.types.size(); ++i) run.values.push_back(tensor_values(run.types[i], outs[i].read()));
  return run;
}

// Floats: |got - want| <= rtol * max(|want|, the tensor's largest |want|).
// Integers and bools: exact.
void expect_close(const TensorType& t, const std::vector<double>& got, const std::vector<double>& want, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = !is_float(t.dtype) ? got[i] == want[i]
                                       : std::abs(got[i] - want[i]) <= rtol * std::max(std::abs(want[i]), scale) ||
                                             (std::isinf(want[i]) && got[i] == want[i]);
    if (!ok) {
      ADD_FAILURE() << what << " " << t.str() << ": element " << i << " is " << got[i] << ", the cpu's " << want[i];
      return;
    }
  }
}

// Tolerances: f32 differs from the CPU by summation order and a few ulps
// of expf/logf; bf16 keeps 8 bits of mantissa.
constexpr double kF32Tolerance = 2e-5;
constexpr double kBf16Tolerance = 2e-2;

class CudaOp : public ::testing::TestWithParam<OpKind> {};

TEST_P(CudaOp, MatchesTheCpuKernel) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 1);
  int cases = 0;
  for (const Case& c : all_cases()) {
    if (c.op != GetParam()) continue;
    ++cases;
    SCOPED_TRACE("case " + c.name);
    const Outcome want = run_cpu(c, DType::f32);
    const Outcome got = run_cuda(device, c, DType::f32);
    for (size_t i = 0; i < want.values.size(); ++i)
      expect_close(want.types[i], got.values[i], want.values[i], kF32Tolerance, "f32 result " + std::to_string(i));
    if (!kBf16Ops.count(c.op)) continue;
    const Outcome want16 = run_cpu(c, DType::bf16);
    const Outcome got16 = run_cuda(device, c, DType::bf16);
    for (size_t i = 0; i < want16.values.size(); ++i)
      expect_close(got16.types[i], got16.values[i], want16.values[i], kBf16Tolerance,
                   "bf16 result " + std::to_string(i));
  }
  EXPECT_GT(cases, 0) << "no case for " << op_name(GetParam());
}

// Ops only CPU devices run: cached_attention runs only in sampling, which
// reads a language model on the CPU, and a mixture of experts has no CUDA
// kernels yet (a CUDA stage holding one stops before its first step: "no
// cuda kernel for moe_route in f32").
bool cpu_only(OpKind op) {
  switch (op) {
    case OpKind::cached_attention:
      return true;
    default:
      return false;
  }
}

// Every op the CPU runs in training and evaluation, but the CPU-only ones.
std::vector<OpKind> ops_the_cpu_runs() {
  std::vector<OpKind> ops;
  for (int i = 0; i < kNumOps; ++i) {
    const auto op = static_cast<OpKind>(i);
    if (cpu::has_forward_kernel(op, DType::f32) && !cpu_only(op)) ops.push_back(op);
  }
  return ops;
}

INSTANTIATE_TEST_SUITE_P(EveryOp, CudaOp, ::testing::ValuesIn(ops_the_cpu_runs()),
                         [](const ::testing::TestParamInfo<OpKind>& p) { return std::string(op_name(p.param)); });

// Host-only checks (no GPU needed): the table covers every op the CPU runs,
// and the cases above cover every such op.

TEST(CudaKernelTable, HasAnF32KernelForEveryOpTheCpuRuns) {
  for (OpKind op : ops_the_cpu_runs())
    EXPECT_TRUE(has_forward_kernel(op, DType::f32)) << "no cuda kernel for " << op_name(op);
  for (int i = 0; i < kNumOps; ++i) {
    const auto op = static_cast<OpKind>(i);
    if (cpu_only(op)) {
      EXPECT_FALSE(has_forward_kernel(op, DType::f32)) << op_name(op);
    }
  }
  EXPECT_FALSE(has_forward_kernel(OpKind::param, DType::f32));
  EXPECT_FALSE(has_forward_kernel(OpKind::add, DType::f64));
}

TEST(CudaKernelTable, HasBf16KernelsWhereDocumented) {
  for (OpKind op : kBf16Ops) EXPECT_TRUE(has_forward_kernel(op, DType::bf16)) << op_name(op);
  for (OpKind op : {OpKind::transpose, OpKind::slice, OpKind::concat, OpKind::cast, OpKind::constant})
    EXPECT_TRUE(has_forward_kernel(op, DType::bf16)) << op_name(op);
  EXPECT_FALSE(has_forward_kernel(OpKind::conv2d, DType::bf16));
}

TEST(CudaKernelTable, UnknownCombinationsThrowANamedError) {
  try {
    forward_kernel(OpKind::conv2d, DType::bf16);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "no cuda kernel for conv2d in bf16");
  }
}

TEST(CudaKernelTable, AttentionRejectsHeadsLargerThan128BeforeTouchingTheDevice) {
  const std::vector<TensorType> in = {{DType::f32, {1, 2, 4, 160}}, {DType::f32, {1, 2, 4, 160}},
                                      {DType::f32, {1, 2, 4, 160}}};
  const std::vector<TensorType> out = {in[0], {DType::f32, {1, 2, 4}}};
  const std::vector<const void*> in_ptrs(3, nullptr);
  const std::vector<void*> out_ptrs(2, nullptr);
  const OpAttrs attrs;
  try {
    forward_kernel(OpKind::attention, DType::f32)(KernelArgs{in, in_ptrs, out, out_ptrs, attrs}, LaunchContext{});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "attention: the cuda kernels take head sizes up to 128, got 160 in f32[1,2,4,160]");
  }
}

TEST(CudaKernelTable, EveryOpTheCpuRunsHasACase) {
  std::set<OpKind> covered;
  for (const Case& c : all_cases()) covered.insert(c.op);
  for (OpKind op : ops_the_cpu_runs()) EXPECT_TRUE(covered.count(op)) << "no case for " << op_name(op);
}

TEST(CudaKernelTable, CasesAreWellTypedByTheShapeRules) {
  // Runs every case on the CPU: a malformed case fails here, without a GPU.
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(std::string(op_name(c.op)) + " " + c.name);
    EXPECT_NO_THROW(run_cpu(c, DType::f32));
  }
}

}  // namespace
}  // namespace pf::cuda
