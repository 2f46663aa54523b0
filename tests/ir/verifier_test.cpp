// The verifier: types of every value, shape-rule errors, loss requirement.
#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf {
namespace {

std::string verify_error(const std::string& body, bool require_loss = false) {
  Module m = parse_module_text("v.pf", body);
  try {
    verify_module(m, m.binding(), VerifyOptions{require_loss});
  } catch (const Error& e) {
    return std::to_string(e.location().line) + ":" + std::to_string(e.location().col) + ": " + e.message();
  }
  return "ok";
}

TEST(Verifier, TypesEveryValueUnderTheBinding) {
  Module m = parse_module_text("v.pf", "dim B = 2\ndim C = 6\ngraph @g(%x: f32[B,C]) -> f32[] {\n"
                                        "  %h = reshape %x shape=[B,2,C/2]\n  %s = reduce_sum %h axes=[0,1,2]\n"
                                        "  return %s\n}\n");
  verify_module(m, m.binding({{"B", 5}}));
  const Function& g = m.graph();
  EXPECT_EQ(g.type_of(g.find_value("h")).str(), "f32[5,2,3]");
  EXPECT_EQ(g.type_of(g.find_value("s")).str(), "f32[]");
}

TEST(Verifier, RejectsIllTypedOps) {
  EXPECT_EQ(verify_error("graph @g(%a: f32[2,3], %b: f32[3,2]) -> f32[2,3] {\n  %c = add %a, %b\n  return %c\n}\n"),
            "2:8: add: shapes f32[2,3] and f32[3,2] do not broadcast");
  EXPECT_EQ(verify_error("graph @g(%a: f32[2,3], %b: f32[2,3]) -> f32[2,3] {\n  %c = matmul %a, %b\n  return %c\n}\n"),
            "2:8: matmul: contraction sizes differ: f32[2,3] and f32[2,3] (3 vs 2)");
  EXPECT_EQ(verify_error("graph @g(%a: f32[2], %b: i32[2]) -> f32[2] {\n  %c = mul %a, %b\n  return %c\n}\n"),
            "2:8: mul: dtypes of f32[2] and i32[2] differ; insert a cast");
  EXPECT_EQ(verify_error("graph @g(%a: f32[2,3]) -> f32[2,3] {\n  %c = relu %a : f32[3,2]\n  return %c\n}\n"),
            "2:8: relu: the result is f32[2,3], but f32[3,2] is written");
  EXPECT_EQ(verify_error("graph @g(%a: f32[2]) -> f32[2] {\n  %c = add %a\n  return %c\n}\n"),
            "2:8: add: takes 2 operands, got 1");
  EXPECT_EQ(verify_error("graph @g(%a: f32[2]) -> f32[2] {\n  %c = softmax %a axis=3\n  return %c\n}\n"),
            "2:8: softmax: axis 3 is out of range for rank 1");
  EXPECT_EQ(verify_error("graph @g(%a: f32[2]) -> f32[2] {\n  %c = pow %a\n  return %c\n}\n"),
            "2:8: pow: missing attribute 'exponent'");
  EXPECT_EQ(verify_error("graph @g() -> f32[2] {\n  %c = param init=zeros\n  return %c\n}\n"),
            "2:8: param: needs its result type written after ':', e.g. ': f32[C]'");
}

TEST(Verifier, ChecksCallsAndReturns) {
  EXPECT_EQ(verify_error("func @f(%x: f32[2]) -> f32[2] {\n  return %x\n}\n"
                         "graph @g(%a: f32[3]) -> f32[2] {\n  %c = call @f(%a) scope=\"f\"\n  return %c\n}\n"),
            "5:8: call: argument 1 of @f is f32[2], but %a is f32[3]");
  EXPECT_EQ(verify_error("graph @g(%a: f32[3]) -> f32[2] {\n  %c = call @nope(%a) scope=\"f\"\n  return %c\n}\n"),
            "2:8: call: no function named @nope");
  EXPECT_EQ(verify_error("func @f(%x: f32[2]) -> f32[2] {\n  %y = call @f(%x) scope=\"r\"\n  return %y\n}\n"
                         "graph @g(%a: f32[2]) -> f32[2] {\n  return %a\n}\n"),
            "2:8: call: @f calls itself through @f; recursion cannot be inlined");
  EXPECT_EQ(verify_error("graph @g(%a: f32[3]) -> f32[2] {\n  return %a\n}\n"),
            "2:3: return: result 1 of @g is declared f32[2], but %a is f32[3]");
}

TEST(Verifier, RequiresAScalarLossWhenAsked) {
  std::string no_loss = "graph @g(%a: f32[3]) -> f32[3] {\n  return %a\n}\n";
  EXPECT_EQ(verify_error(no_loss), "ok");
  EXPECT_EQ(verify_error(no_loss, true),
            "2:3: @g has no scalar loss: its first result %a is f32[3]; a training graph returns a float scalar such "
            "as cross_entropy's first");
  EXPECT_EQ(verify_error("dim B = 1\n"), "1:1: the module has no graph; a model needs one 'graph @name(...) -> f32[] { ... }'");
}

TEST(Verifier, BindingOverridesAreChecked) {
  Module m = parse_module_text("v.pf", "dim B = 2\ngraph @g(%x: f32[B]) -> f32[B] {\n  return %x\n}\n");
  try {
    m.binding({{"Q", 3}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "--bind: the model declares no dimension 'Q' (it declares: B)");
  }
  EXPECT_EQ(parse_binding("B=8,T=64"), (DimBinding{{"B", 8}, {"T", 64}}));
  EXPECT_THROW(parse_binding("B=0"), Error);
  EXPECT_THROW(parse_binding("B"), Error);
}

}  // namespace
}  // namespace pf
