// The cases of the sources, matmul, the elementwise ops, softmax, the norms and rope.
#include <cmath>
#include <functional>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "tests/cpu/every_op/cases.h"
#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

void add_elementwise_cases(std::vector<OpCase>& cs, Gen& g) {
  const DType f64 = DType::f64;
  auto add = [&](OpKind op, Case c) { cs.push_back({op, std::move(c)}); };

  // Sources.
  add(OpKind::constant, {"f64 fill", {}, {real_attr("value", 1.5)}, {{f64, {2, 3}}}, fill_ref(1.5)});
  add(OpKind::constant, {"i32 fill", {}, {real_attr("value", -7)}, {{DType::i32, {5}}}, fill_ref(-7)});
  add(OpKind::constant, {"bool fill", {}, {real_attr("value", 1)}, {{DType::boolean, {3}}}, fill_ref(1)});
  add(OpKind::dim_value, {"scalar", {}, {dim_attr("value", 384)}, {{f64, {}}}, fill_ref(384)});
  add(OpKind::causal_mask, {"batched", {}, {}, {{DType::boolean, {2, 5, 5}}}, causal_mask_ref});
  add(OpKind::causal_mask, {"one matrix", {}, {}, {{DType::boolean, {3, 3}}}, causal_mask_ref});

  // matmul: plain, each transpose, the collapsed [B*T, K] x [K, N] path,
  // batch broadcasting both ways, a broadcast left operand, K = 0.
  struct Mm {
    const char* name;
    Shape a, b;
    bool ta, tb;
  };
  for (const Mm& m : std::vector<Mm>{{"plain", {3, 4}, {4, 5}, false, false},
                                     {"transpose_a", {4, 3}, {4, 5}, true, false},
                                     {"transpose_b", {3, 4}, {5, 4}, false, true},
                                     {"both transposed", {4, 3}, {5, 4}, true, true},
                                     {"batched left, rank-2 right (one GEMM)", {2, 3, 4, 5}, {5, 6}, false, false},
                                     {"batched left, rank-2 right transposed", {2, 3, 5}, {4, 5}, false, true},
                                     {"batched transposed left, rank-2 right", {2, 4, 3}, {4, 5}, true, false},
                                     {"same batch", {2, 3, 4}, {2, 4, 5}, false, false},
                                     {"batch broadcast", {2, 1, 3, 4}, {3, 4, 5}, false, false},
                                     {"batch broadcast, transposed", {2, 1, 4, 3}, {3, 5, 4}, true, true},
                                     {"rank-2 left, batched right", {3, 4}, {2, 4, 5}, false, false},
                                     {"empty contraction", {2, 0}, {0, 3}, false, false}}) {
    std::vector<OpAttrs::Entry> attrs;
    if (m.ta) attrs.push_back(bool_attr("transpose_a", true));
    if (m.tb) attrs.push_back(bool_attr("transpose_b", true));
    add(OpKind::matmul, {m.name, {g.uniform(m.a), g.uniform(m.b)}, attrs, {}, matmul_ref(m.ta, m.tb)});
  }

  // Binary ops: same shape (with a tail), a bias on the last axis, a column
  // [.., 1], both sides broadcast, a scalar on either side, an outer product.
  struct Bin {
    OpKind op;
    std::function<double(double, double)> f;
  };
  for (const Bin& b : std::vector<Bin>{{OpKind::add, std::plus<double>()},
                                       {OpKind::sub, std::minus<double>()},
                                       {OpKind::mul, std::multiplies<double>()},
                                       {OpKind::div, std::divides<double>()}}) {
    // Divisors stay away from 0.
    const double lo = b.op == OpKind::div ? 0.5 : -2;
    const std::vector<std::pair<Shape, Shape>> shapes = {
        {{2, 3, 7}, {2, 3, 7}}, {{2, 3, 8}, {8}}, {{2, 3, 5}, {2, 3, 1}}, {{2, 1, 4}, {3, 1}},
        {{}, {2, 3}},           {{4, 5}, {}},     {{3, 1}, {1, 4}},       {{1, 3, 1, 2}, {2, 1, 4, 1}}};
    for (const auto& [sa, sb] : shapes)
      add(b.op, {TensorType{f64, sa}.str() + " with " + TensorType{f64, sb}.str(),
                 {g.uniform(sa), g.uniform(sb, lo, 2)},
                 {},
                 {},
                 binary_ref(b.f)});
  }
  const Reference where_ref = [](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    return map_ref(in, out[0], [](const std::vector<double>& a) { return a[0] != 0 ? a[1] : a[2]; });
  };
  add(OpKind::where, {"same shape", {g.bools({3, 9}), g.uniform({3, 9}), g.uniform({3, 9})}, {}, {}, where_ref});
  add(OpKind::where, {"mask against scalars", {g.bools({2, 4, 4}), g.uniform({}), g.uniform({})}, {}, {}, where_ref});
  add(OpKind::where, {"mask, tensor, scalar", {g.bools({4, 6}), g.uniform({4, 6}), g.uniform({})}, {}, {}, where_ref});
  add(OpKind::where, {"all broadcast", {g.bools({2, 1, 4}), g.uniform({3, 1}), g.uniform({})}, {}, {}, where_ref});

  // Unary ops, on 3 x 7 (a tail after whole vectors); log, sqrt, rsqrt on positives.
  struct Un {
    OpKind op;
    std::function<double(double)> f;
    bool positive;
  };
  for (const Un& u : std::vector<Un>{
           {OpKind::neg, [](double x) { return -x; }, false},
           {OpKind::exp, [](double x) { return std::exp(x); }, false},
           {OpKind::log, [](double x) { return std::log(x); }, true},
           {OpKind::sqrt, [](double x) { return std::sqrt(x); }, true},
           {OpKind::rsqrt, [](double x) { return 1 / std::sqrt(x); }, true},
           {OpKind::tanh, [](double x) { return std::tanh(x); }, false},
           {OpKind::sigmoid, [](double x) { return 1 / (1 + std::exp(-x)); }, false},
           {OpKind::relu, [](double x) { return x > 0 ? x : 0; }, false},
           {OpKind::gelu,
            [](double x) {
              return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
            },
            false},
           {OpKind::gelu_erf, [](double x) { return 0.5 * x * (1 + std::erf(x / std::numbers::sqrt2)); }, false},
           {OpKind::silu, [](double x) { return x / (1 + std::exp(-x)); }, false}}) {
    add(u.op, {"3x7", {u.positive ? g.uniform({3, 7}, 0.1, 3) : g.uniform({3, 7}, -4, 4)}, {}, {}, unary_ref(u.f)});
  }
  for (double e : {2.0, 3.0, 0.5, -1.0, 1.0, -1.5, 2.5})
    add(OpKind::pow, {"exponent " + std::to_string(e),
                      {g.uniform({3, 7}, 0.1, 3)},
                      {real_attr("exponent", e)},
                      {},
                      unary_ref([e](double x) { return std::pow(x, e); })});
  add(OpKind::pow,
      {"square of negatives", {g.uniform({9}, -3, 3)}, {real_attr("exponent", 2)}, {}, unary_ref([](double x) {
         return x * x;
       })});

  add(OpKind::dropout,
      {"p=0.3", {g.uniform({4, 50})}, {real_attr("p", 0.3), dim_attr("seed", 42)}, {}, dropout_ref(0.3, 42)});
  add(OpKind::dropout,
      {"p=0 keeps all", {g.uniform({3, 5})}, {real_attr("p", 0), dim_attr("seed", 7)}, {}, dropout_ref(0, 7)});

  // cast: float to each integer (truncation and saturation), to bool, and back.
  const Tensor to_cast = values(f64, {8}, {1.75, -2.5, 3, 0, -0.25, 1e10, -1e10, 2.5e9});
  add(OpKind::cast, {"float to i32", {to_cast}, {dtype_attr("to", DType::i32)}, {}, cast_ref(DType::i32)});
  add(OpKind::cast, {"float to i64", {to_cast}, {dtype_attr("to", DType::i64)}, {}, cast_ref(DType::i64)});
  add(OpKind::cast, {"float to bool", {to_cast}, {dtype_attr("to", DType::boolean)}, {}, cast_ref(DType::boolean)});
  add(OpKind::cast,
      {"i32 to float", {g.ints(DType::i32, {2, 5}, -1000, 1000)}, {dtype_attr("to", f64)}, {}, cast_ref(f64)});
  add(OpKind::cast,
      {"i64 to i32", {g.ints(DType::i64, {6}, -1000, 1000)}, {dtype_attr("to", DType::i32)}, {}, cast_ref(DType::i32)});
  add(OpKind::cast, {"bool to float", {g.bools({7})}, {dtype_attr("to", f64)}, {}, cast_ref(f64)});
  add(OpKind::cast, {"float to float", {g.uniform({5})}, {dtype_attr("to", f64)}, {}, cast_ref(f64)});

  // softmax and log_softmax over the last axis, a middle one and the first.
  for (OpKind op : {OpKind::softmax, OpKind::log_softmax}) {
    const bool log = op == OpKind::log_softmax;
    add(op, {"last axis (default)", {g.uniform({3, 11}, -5, 5)}, {}, {}, softmax_ref(-1, log)});
    add(op, {"middle axis", {g.uniform({2, 5, 6}, -5, 5)}, {dim_attr("axis", 1)}, {}, softmax_ref(1, log)});
    add(op, {"first axis", {g.uniform({4, 3, 2}, -5, 5)}, {dim_attr("axis", -3)}, {}, softmax_ref(0, log)});
  }

  add(OpKind::layernorm,
      {"default eps", {g.uniform({2, 3, 10}), g.uniform({10}), g.uniform({10})}, {}, {}, layernorm_ref(1e-5)});
  add(OpKind::layernorm, {"eps and a large mean",
                          {g.uniform({4, 9}, 99, 101), g.uniform({9}), g.uniform({9})},
                          {real_attr("eps", 1e-3)},
                          {},
                          layernorm_ref(1e-3)});
  add(OpKind::rmsnorm, {"default eps", {g.uniform({3, 12}), g.uniform({12})}, {}, {}, rmsnorm_ref(1e-6)});
  add(OpKind::rmsnorm, {"eps", {g.uniform({2, 2, 5}), g.uniform({5})}, {real_attr("eps", 0.1)}, {}, rmsnorm_ref(0.1)});

  // rope: heads before positions (the default axis), positions before
  // heads (axis 1), and given positions far along, in i32 and i64.
  Gen rope_inputs(31);  // its own stream: the cases after these keep their inputs
  add(OpKind::rope, {"[B, H, T, D]", {rope_inputs.uniform({2, 3, 5, 8})}, {}, {}, rope_ref(-2, 10000, false)});
  add(OpKind::rope, {"[B, T, H, D], axis 1, theta 500",
                     {rope_inputs.uniform({2, 6, 3, 4})},
                     {dim_attr("axis", 1), real_attr("theta", 500)},
                     {},
                     rope_ref(1, 500, false)});
  add(OpKind::rope, {"inverse", {rope_inputs.uniform({3, 4, 6})}, {bool_attr("inverse", true)}, {},
                     rope_ref(-2, 10000, true)});
  add(OpKind::rope, {"i32 positions after a cache",
                     {rope_inputs.uniform({2, 4, 6}), values(DType::i32, {4}, {7, 8, 9, 10})},
                     {},
                     {},
                     rope_ref(-2, 10000, false)});
  add(OpKind::rope, {"i64 positions, far along",
                     {rope_inputs.uniform({1, 2, 4, 10}), values(DType::i64, {4}, {4000, 1, 0, 250})},
                     {},
                     {},
                     rope_ref(-2, 10000, false)});
  add(OpKind::rope, {"[B, H, T, D], each sequence's own positions",
                     {rope_inputs.uniform({2, 3, 4, 6}), values(DType::i32, {2, 4}, {0, 1, 2, 3, 9, 10, 11, 12})},
                     {},
                     {},
                     rope_ref(-2, 10000, false)});
  add(OpKind::rope, {"[B, T, H, D], axis 1, each sequence's own i64 positions",
                     {rope_inputs.uniform({3, 2, 2, 4}), values(DType::i64, {3, 2}, {5, 6, 0, 1, 70, 71})},
                     {dim_attr("axis", 1)},
                     {},
                     rope_ref(1, 10000, false)});
}

}  // namespace pf::cpu::every_op
