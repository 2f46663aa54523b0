// Every CPU forward kernel against a naive float64 reference: one test per op of ir/ops.def.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/op_table.h"
#include "tests/cpu/every_op/cases.h"
#include "tests/cpu/every_op/harness.h"

namespace pf::cpu::every_op {
namespace {

// The walk over ops.def: one test per op. An op with no kernel or no case fails its test.

class EveryOp : public testing::TestWithParam<int> {};

TEST_P(EveryOp, MatchesTheFloat64Reference) {
  const auto op = static_cast<OpKind>(GetParam());
  if (op == OpKind::param || op == OpKind::call) {
    // The executor supplies parameters and calls are inlined: no kernels.
    EXPECT_FALSE(has_forward_kernel(op, DType::f32));
    EXPECT_FALSE(has_forward_kernel(op, DType::f64));
    return;
  }
  ASSERT_TRUE(has_forward_kernel(op, DType::f64)) << "no f64 cpu kernel for " << op_name(op);
  ASSERT_TRUE(has_forward_kernel(op, DType::f32)) << "no f32 cpu kernel for " << op_name(op);
  int n = 0;
  for (const OpCase& c : cases()) {
    if (c.op != op) continue;
    ++n;
    check_case(op, c.c);
  }
  EXPECT_GT(n, 0) << "no test case for " << op_name(op) << "; add one to all_cases()";
}

// ---------------------------------------------------------------------------
// attention's layouts: under "bthd" the kernels read q, k, v [B, T, H, D]
// where "bhtd" reads them transposed to [B, H, T, D]. A head's rows meet the
// same products in the same order (gemm's sums do not depend on the rows'
// stride), so o, lse, dq, dk and dv are the same bits, transposed back.

// [a, b, c, d] -> [a, c, b, d].
Tensor swap_middle_axes(const Tensor& t) {
  const Shape& s = t.type.shape;
  Tensor out = values(t.type.dtype, {s[0], s[2], s[1], s[3]}, std::vector<double>(t.v.size()));
  for (int64_t i = 0; i < t.type.numel(); ++i) {
    const Index idx = unravel(i, s);
    out.v[ravel({idx[0], idx[2], idx[1], idx[3]}, out.type.shape)] = t.v[i];
  }
  return out;
}

TEST(AttentionLayout, BthdGivesTheBitsOfBhtdOnTransposedOperands) {
  Gen g(11);
  for (const bool causal : {true, false}) {
    for (const Shape& shape : {Shape{2, 70, 3, 8}, Shape{1, 65, 2, 4}}) {
      const std::vector<OpAttrs::Entry> bhtd = {bool_attr("causal", causal)};
      const std::vector<OpAttrs::Entry> bthd = {bool_attr("causal", causal), string_attr("layout", "bthd")};
      const Tensor q = g.uniform(shape), k = g.uniform(shape), v = g.uniform(shape), grad = g.uniform(shape);
      const Shape rows = {shape[0], shape[2], shape[1]};  // lse [B, H, T]
      for (DType dtype : {DType::f64, DType::f32}) {
        SCOPED_TRACE((std::string(dtype_name(dtype)) + (causal ? ", causal " : ", ") + TensorType{dtype, shape}.str()));
        const auto t = [](const Tensor& x) { return swap_middle_axes(x); };
        const Result want = run_kernel(OpKind::attention, dtype, Case{"bhtd", {t(q), t(k), t(v)}, bhtd, {}, {}});
        const Result got = run_kernel(OpKind::attention, dtype, Case{"bthd", {q, k, v}, bthd, {}, {}});
        const Tensor o = values(DType::f64, want.types[0].shape, want.values[0]);
        EXPECT_EQ(got.values[0], t(o).v) << "o";
        EXPECT_EQ(got.values[1], want.values[1]) << "lse";
        const Tensor lse = values(DType::f64, rows, want.values[1]);
        const Result dwant =
            run_kernel(OpKind::attention_grad, dtype, Case{"bhtd", {t(grad), t(q), t(k), t(v), o, lse}, bhtd, {}, {}});
        const Result dgot =
            run_kernel(OpKind::attention_grad, dtype, Case{"bthd", {grad, q, k, v, t(o), lse}, bthd, {}, {}});
        for (int r = 0; r < 3; ++r)
          EXPECT_EQ(dgot.values[r], t(values(DType::f64, dwant.types[r].shape, dwant.values[r])).v)
              << "gradient " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ForwardKernels, EveryOp, testing::Range(0, kNumOps), [](const testing::TestParamInfo<int>& p) {
  return std::string(op_name(static_cast<OpKind>(p.param)));
});

}  // namespace
}  // namespace pf::cpu::every_op
