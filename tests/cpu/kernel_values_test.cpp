// CPU kernels on hand-checked values, dropout's mask statistics, and the errors kernels raise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"
#include "tests/error_of.h"
#include "tests/op_attr_entries.h"

namespace pf::cpu {
namespace {

using testing_support::error_of;

constexpr double kInf = std::numeric_limits<double>::infinity();

/// One operand: its type and its bytes.
struct Operand {
  TensorType type;
  std::vector<std::byte> bytes;
};

template <class E>
Operand operand(DType dt, Shape shape, const std::vector<E>& v) {
  Operand o{{dt, std::move(shape)}, std::vector<std::byte>(v.size() * sizeof(E))};
  std::memcpy(o.bytes.data(), v.data(), o.bytes.size());
  return o;
}

/// A float operand in T (float or double) from double values.
template <class T>
Operand floats(Shape shape, const std::vector<double>& v) {
  return operand(sizeof(T) == 4 ? DType::f32 : DType::f64, std::move(shape), std::vector<T>(v.begin(), v.end()));
}

/// Runs `op` in dtype `run` and returns its single result as E.
template <class E>
std::vector<E> run(OpKind op, DType run, const std::vector<Operand>& in, TensorType out,
                   const std::vector<OpAttrs::Entry>& attrs = {}) {
  OpAttrs a;
  for (const auto& e : attrs) a.add(e);
  std::vector<TensorType> in_types;
  std::vector<const void*> in_ptrs;
  for (const Operand& o : in) {
    in_types.push_back(o.type);
    in_ptrs.push_back(o.bytes.data());
  }
  std::vector<E> result(static_cast<size_t>(out.numel()), E(-1));  // poisoned
  void* out_ptr = result.data();
  const TensorType out_types[] = {out};
  forward_kernel(op, run)(KernelArgs{in_types, in_ptrs, out_types, std::span<void* const>(&out_ptr, 1), a});
  return result;
}

using testing_support::dim_attr;
using testing_support::dims_attr;
using testing_support::dtype_attr;
using testing_support::real_attr;

template <class T>
class HandChecked : public testing::Test {
 protected:
  static constexpr DType kRun = sizeof(T) == 4 ? DType::f32 : DType::f64;
  static constexpr double kTol = sizeof(T) == 4 ? 1e-6 : 1e-14;
  static TensorType type(Shape s) { return {kRun, std::move(s)}; }
  static void expect_values(const std::vector<T>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isinf(want[i]))
        EXPECT_EQ(got[i], want[i]) << "element " << i;
      else
        EXPECT_NEAR(got[i], want[i], kTol * std::max(1.0, std::abs(want[i]))) << "element " << i;
    }
  }
};
using FloatTypes = testing::Types<float, double>;
TYPED_TEST_SUITE(HandChecked, FloatTypes);

TYPED_TEST(HandChecked, SoftmaxOfZeroAndLog2IsAThirdAndTwoThirds) {
  using T = TypeParam;
  const auto x = floats<T>({2}, {0, std::numbers::ln2});
  this->expect_values(run<T>(OpKind::softmax, this->kRun, {x}, this->type({2})), {1.0 / 3, 2.0 / 3});
  this->expect_values(run<T>(OpKind::log_softmax, this->kRun, {x}, this->type({2})),
                      {std::log(1.0 / 3), std::log(2.0 / 3)});
}

TYPED_TEST(HandChecked, SoftmaxGivesMaskedEntriesZero) {
  using T = TypeParam;
  // Two rows of 10, longer than a vector register, every other entry masked
  // with -inf: the five others share the probability.
  std::vector<double> x(20), want(20), log_want(20);
  for (int i = 0; i < 20; ++i) {
    x[i] = i % 2 ? -kInf : 1.5;
    want[i] = i % 2 ? 0 : 0.2;
    log_want[i] = i % 2 ? -kInf : std::log(0.2);
  }
  this->expect_values(run<T>(OpKind::softmax, this->kRun, {floats<T>({2, 10}, x)}, this->type({2, 10})), want);
  this->expect_values(run<T>(OpKind::log_softmax, this->kRun, {floats<T>({2, 10}, x)}, this->type({2, 10})), log_want);
}

TYPED_TEST(HandChecked, GeluIsTheTanhForm) {
  using T = TypeParam;
  this->expect_values(run<T>(OpKind::gelu, this->kRun, {floats<T>({4}, {1, -1, 3, 0})}, this->type({4})),
                      {0.8411919906082768, -0.15880800939172324, 2.996362607918227, 0});
}

TYPED_TEST(HandChecked, LargeInputsNeitherOverflowNorGiveNaN) {
  using T = TypeParam;
  this->expect_values(run<T>(OpKind::gelu, this->kRun, {floats<T>({2}, {-100, 100})}, this->type({2})), {0, 100});
  this->expect_values(run<T>(OpKind::sigmoid, this->kRun, {floats<T>({2}, {-1000, 1000})}, this->type({2})), {0, 1});
  const auto big = floats<T>({2}, {1000, 0});
  this->expect_values(run<T>(OpKind::softmax, this->kRun, {big}, this->type({2})), {1, 0});
  this->expect_values(run<T>(OpKind::log_softmax, this->kRun, {big}, this->type({2})), {0, -1000});
  this->expect_values(
      run<T>(OpKind::cross_entropy, this->kRun, {big, operand<int32_t>(DType::i32, {}, {1})}, this->type({})), {1000});
}

TYPED_TEST(HandChecked, LayernormOfOneTwoThree) {
  using T = TypeParam;
  const double k = 1.2247356859083902;  // 1 / sqrt(2/3 + 1e-5)
  this->expect_values(
      run<T>(OpKind::layernorm, this->kRun,
             {floats<T>({3}, {1, 2, 3}), floats<T>({3}, {1, 1, 2}), floats<T>({3}, {0, 5, 1})}, this->type({3})),
      {-k, 5, 2 * k + 1});
}

TYPED_TEST(HandChecked, CrossEntropyAveragesTheCountedTargets) {
  using T = TypeParam;
  const auto logits = floats<T>({3, 2}, {0, std::numbers::ln2, 5, -5, 0, std::numbers::ln2});
  // Rows 0 and 2 count (-log(2/3) each); row 1 is ignored.
  this->expect_values(run<T>(OpKind::cross_entropy, this->kRun,
                             {logits, operand<int64_t>(DType::i64, {3}, {1, -100, 1})}, this->type({})),
                      {0.4054651081081644});
  // Nothing counted: the loss is 0, not NaN.
  this->expect_values(run<T>(OpKind::cross_entropy, this->kRun, {logits, operand<int32_t>(DType::i32, {3}, {4, 4, 4})},
                             this->type({}), {dim_attr("ignore_index", 4)}),
                      {0});
}

TYPED_TEST(HandChecked, MatmulOfTwoByTwo) {
  using T = TypeParam;
  this->expect_values(run<T>(OpKind::matmul, this->kRun,
                             {floats<T>({2, 2}, {1, 2, 3, 4}), floats<T>({2, 2}, {5, 6, 7, 8})}, this->type({2, 2})),
                      {19, 22, 43, 50});
}

TYPED_TEST(HandChecked, AvgPoolCountsPaddingAndMaxPoolIgnoresIt) {
  using T = TypeParam;
  const std::vector<OpAttrs::Entry> attrs = {dims_attr("kernel", {2, 2}), dims_attr("padding", {1, 1})};
  // Each 2x2 window at stride 2 over the padded 2x2 input holds one real element.
  this->expect_values(
      run<T>(OpKind::avg_pool2d, this->kRun, {floats<T>({1, 1, 2, 2}, {1, 1, 1, 1})}, this->type({1, 1, 2, 2}), attrs),
      {0.25, 0.25, 0.25, 0.25});
  this->expect_values(run<T>(OpKind::max_pool2d, this->kRun, {floats<T>({1, 1, 2, 2}, {-1, -2, -3, -4})},
                             this->type({1, 1, 2, 2}), attrs),
                      {-1, -2, -3, -4});
}

TYPED_TEST(HandChecked, CastsBetweenFloatWidthsAndSaturatesToIntegers) {
  using T = TypeParam;
  const DType other = this->kRun == DType::f32 ? DType::f64 : DType::f32;
  const auto x = floats<T>({3}, {0.5, -1.25, 3});
  if (other == DType::f64)
    EXPECT_EQ(run<double>(OpKind::cast, this->kRun, {x}, {other, {3}}, {dtype_attr("to", other)}),
              (std::vector<double>{0.5, -1.25, 3}));
  else
    EXPECT_EQ(run<float>(OpKind::cast, this->kRun, {x}, {other, {3}}, {dtype_attr("to", other)}),
              (std::vector<float>{0.5f, -1.25f, 3.0f}));
  const auto odd = floats<T>({4}, {std::nan(""), kInf, -kInf, -2.75});
  EXPECT_EQ(run<int32_t>(OpKind::cast, this->kRun, {odd}, {DType::i32, {4}}, {dtype_attr("to", DType::i32)}),
            (std::vector<int32_t>{0, INT32_MAX, INT32_MIN, -2}));
}

TEST(HandChecked, CausalMaskIsLowerTriangularWithTheDiagonal) {
  EXPECT_EQ(run<uint8_t>(OpKind::causal_mask, DType::boolean, {}, {DType::boolean, {2, 3, 3}}),
            (std::vector<uint8_t>{1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1}));
}

// ---------------------------------------------------------------------------
// dropout

std::vector<double> dropout(DType dt, const std::vector<double>& x, double p, int64_t seed) {
  const std::vector<OpAttrs::Entry> attrs = {real_attr("p", p), dim_attr("seed", seed)};
  const Shape s = {static_cast<int64_t>(x.size())};
  if (dt == DType::f64) return run<double>(OpKind::dropout, dt, {floats<double>(s, x)}, {dt, s}, attrs);
  const std::vector<float> y = run<float>(OpKind::dropout, dt, {floats<float>(s, x)}, {dt, s}, attrs);
  return {y.begin(), y.end()};
}

TEST(Dropout, IsDeterministicPerSeedAndKeepsAboutOneMinusP) {
  const std::vector<double> ones(100000, 1.0);
  for (double p : {0.1, 0.5, 0.9}) {
    SCOPED_TRACE("p = " + std::to_string(p));
    const std::vector<double> a = dropout(DType::f64, ones, p, 1234);
    EXPECT_EQ(a, dropout(DType::f64, ones, p, 1234)) << "same seed, same mask";
    const std::vector<double> b = dropout(DType::f64, ones, p, 1235);
    EXPECT_NE(a, b) << "another seed, another mask";
    int64_t kept = 0, kept_b = 0, same = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      kept += a[i] != 0;
      kept_b += b[i] != 0;
      same += (a[i] != 0) == (b[i] != 0);
      // Kept elements are scaled by 1 / (1 - p); the others are 0.
      ASSERT_TRUE(a[i] == 0 || std::abs(a[i] - 1 / (1 - p)) < 1e-12) << a[i];
      // The mask is the documented one.
      ASSERT_EQ(a[i] != 0, dropout_uniform(1234, i) >= p) << "element " << i;
    }
    const double rate = static_cast<double>(kept) / static_cast<double>(a.size());
    EXPECT_NEAR(rate, 1 - p, 0.02);
    EXPECT_NEAR(static_cast<double>(kept_b) / static_cast<double>(b.size()), 1 - p, 0.02);
    // Two seeds' masks agree about as often as independent ones would.
    const double agree = p * p + (1 - p) * (1 - p);
    EXPECT_NEAR(static_cast<double>(same) / static_cast<double>(a.size()), agree, 0.02);
    // The f32 kernel drops the same elements.
    const std::vector<double> f = dropout(DType::f32, ones, p, 1234);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i] != 0, f[i] != 0) << "element " << i;
  }
}

TEST(Dropout, WithPZeroIsTheIdentity) {
  const std::vector<double> x = {1, -2, 3.5, 0, 7};
  EXPECT_EQ(dropout(DType::f64, x, 0, 99), x);
}

// ---------------------------------------------------------------------------
// Lookup and errors

TEST(KernelTable, NamesTheMissingKernel) {
  EXPECT_EQ(error_of([] { forward_kernel(OpKind::param, DType::f32); }), "no cpu kernel for param in f32");
  EXPECT_EQ(error_of([] { forward_kernel(OpKind::call, DType::f64); }), "no cpu kernel for call in f64");
  EXPECT_EQ(error_of([] { forward_kernel(OpKind::add, DType::i32); }), "no cpu kernel for add in i32");
  EXPECT_EQ(error_of([] { forward_kernel(OpKind::matmul, DType::f16); }), "no cpu kernel for matmul in f16");
  EXPECT_FALSE(has_forward_kernel(OpKind::relu, DType::bf16));
}

TEST(KernelTable, MovesAndProducesEveryStoredDtype) {
  for (OpKind op : {OpKind::constant, OpKind::causal_mask, OpKind::cast, OpKind::reshape, OpKind::transpose,
                    OpKind::slice, OpKind::concat, OpKind::split})
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::boolean})
      EXPECT_TRUE(has_forward_kernel(op, dt)) << op_name(op) << " in " << dtype_name(dt);
}

TEST(KernelErrors, EmbeddingRejectsAnIndexOutOfRange) {
  const auto table = floats<double>({3, 2}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(error_of([&] {
              run<double>(OpKind::embedding, DType::f64, {table, operand<int32_t>(DType::i32, {2}, {2, 3})},
                          {DType::f64, {2, 2}});
            }),
            "embedding: index 3 at position 1 is out of range [0, 3)");
  EXPECT_EQ(error_of([&] {
              run<double>(OpKind::embedding, DType::f64, {table, operand<int64_t>(DType::i64, {1}, {-1})},
                          {DType::f64, {1, 2}});
            }),
            "embedding: index -1 at position 0 is out of range [0, 3)");
}

TEST(KernelErrors, CrossEntropyRejectsATargetOutOfRange) {
  const auto logits = floats<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(error_of([&] {
              run<float>(OpKind::cross_entropy, DType::f32, {logits, operand<int64_t>(DType::i64, {2}, {0, 3})},
                         {DType::f32, {}});
            }),
            "cross_entropy: target 3 at position 1 is out of range [0, 3)");
}

}  // namespace
}  // namespace pf::cpu
