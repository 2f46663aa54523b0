// Dimension expressions: evaluation, errors and minimal parenthesisation.
#include <gtest/gtest.h>

#include "ir/dim_expr.h"
#include "ir/diagnostic.h"
#include "ir/types.h"

namespace pf {
namespace {

using K = DimExpr::Kind;

TEST(DimExpr, EvaluatesUnderBinding) {
  DimExpr c = DimExpr::symbol("C");
  DimExpr e = DimExpr::binary(K::div, DimExpr::binary(K::mul, 3, c), DimExpr::symbol("H"));
  DimBinding b{{"C", 768}, {"H", 12}};
  EXPECT_EQ(e.evaluate(b), 192);
  EXPECT_EQ(e.str(), "3*C/H");
}

TEST(DimExpr, ReportsTheUnboundSymbol) {
  std::string missing;
  EXPECT_FALSE(DimExpr::symbol("T").evaluate({}, &missing));
  EXPECT_EQ(missing, "T");
}

TEST(DimExpr, OverflowAndDivisionByZeroHaveNoValue) {
  DimExpr big = int64_t{1} << 62;
  EXPECT_FALSE(DimExpr::binary(K::mul, big, 4).evaluate({}));
  EXPECT_FALSE(DimExpr::binary(K::div, 4, 0).evaluate({}));
  EXPECT_FALSE(DimExpr::binary(K::add, INT64_MAX, 1).evaluate({}));
}

TEST(DimExpr, PrintsOnlyNeededParentheses) {
  DimExpr a = DimExpr::symbol("A"), b = DimExpr::symbol("B"), c = DimExpr::symbol("C");
  EXPECT_EQ(DimExpr::binary(K::sub, a, DimExpr::binary(K::sub, b, c)).str(), "A-(B-C)");
  EXPECT_EQ(DimExpr::binary(K::sub, DimExpr::binary(K::sub, a, b), c).str(), "A-B-C");
  EXPECT_EQ(DimExpr::binary(K::mul, DimExpr::binary(K::add, a, b), c).str(), "(A+B)*C");
  EXPECT_EQ(DimExpr::binary(K::add, a, DimExpr::binary(K::mul, b, c)).str(), "A+B*C");
  EXPECT_EQ(DimExpr::binary(K::div, a, DimExpr::binary(K::div, b, c)).str(), "A/(B/C)");
  EXPECT_EQ(DimExpr::binary(K::mul, 2, -1).str(), "2*(-1)");
  EXPECT_EQ(DimExpr(-1).str(), "-1");
}

TEST(SymType, BindRejectsUnknownAndHugeDimensions) {
  SymType t{DType::f32, {DimExpr::symbol("Q")}};
  try {
    t.bind({});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "unknown dimension 'Q'; declare it with 'dim Q = N'");
  }
  SymType huge{DType::f32, {DimExpr(int64_t{1} << 40), DimExpr(int64_t{1} << 20)}};
  try {
    huge.bind({});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "tensor type f32[1099511627776,1048576] has more than 2^50 elements");
  }
}

}  // namespace
}  // namespace pf
