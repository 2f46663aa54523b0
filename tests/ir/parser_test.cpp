// The parser and printer through the API: structure, round trip, errors.
#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/printer.h"

namespace pf {
namespace {

constexpr const char* kTied = R"(dim B = 2
dim V = 10
dim C = 4

graph @tied(%ids: i32[B], %y: i32[B]) -> f32[] {
  %emb = param init=normal(0.02) : f32[V,C]
  %h = embedding %emb, %ids : f32[B,C]
  %logits = matmul %h, %emb transpose_b=true : f32[B,V]
  %loss = cross_entropy %logits, %y : f32[]
  return %loss
}
)";

TEST(Parser, BuildsValuesOpsAndUses) {
  Module m = parse_module_text("tied.pf", kTied);
  ASSERT_EQ(m.dims.size(), 3u);
  EXPECT_EQ(m.dims[1].name, "V");
  EXPECT_EQ(m.dims[1].value, 10);
  const Function& g = m.graph();
  EXPECT_TRUE(g.is_graph);
  ASSERT_EQ(g.ops.size(), 4u);
  EXPECT_EQ(g.ops[0].kind, OpKind::param);
  EXPECT_EQ(g.ops[0].attr("init")->init.str(), "normal(0.02)");
  // The tied parameter is one value used by two ops.
  ValueId emb = g.find_value("emb");
  auto users = g.users();
  EXPECT_EQ(users[emb], (std::vector<int>{1, 2}));
  EXPECT_EQ(g.values[g.returns[0]].name, "loss");
  EXPECT_EQ(g.ops[2].loc.line, 8);
  EXPECT_EQ(g.ops[2].loc.col, 13);
}

TEST(Parser, PrintIsTheIdentityOnCanonicalText) {
  Module m = parse_module_text("tied.pf", kTied);
  EXPECT_EQ(print_module(m), kTied);
}

TEST(Parser, CommentsAndSpacingAreNotKept) {
  Module m = parse_module_text("c.pf", "// a model\ndim B = 2 // batch\n\n\ngraph @g(%x: f32[B]) -> f32[B] {\n"
                                        "    %y = relu %x   : f32[B]   // activation\n  return %y\n}\n");
  EXPECT_EQ(print_module(m), "dim B = 2\n\ngraph @g(%x: f32[B]) -> f32[B] {\n  %y = relu %x : f32[B]\n  return %y\n}\n");
}

TEST(Parser, RealsPrintInShortestForm) {
  Module m = parse_module_text("r.pf", "graph @g() -> f32[] {\n  %a = constant value=0.10 : f32[]\n"
                                        "  %b = constant value=1E-05 : f32[]\n  %c = constant value=-inf : f32[]\n"
                                        "  return %a\n}\n");
  std::string text = print_module(m);
  EXPECT_NE(text.find("value=0.1 "), std::string::npos) << text;
  EXPECT_NE(text.find("value=1e-5 "), std::string::npos) << text;
  EXPECT_NE(text.find("value=-inf "), std::string::npos) << text;
}

struct ErrorCase {
  const char* text;
  const char* message;
  int line, col;
};

TEST(Parser, ErrorsAreLocated) {
  const ErrorCase cases[] = {
      {"graph @g() -> f32[] {\n  return %x\n}\n", "use of undefined value %x", 2, 10},
      {"graph @g() -> f32[] {\n  %a = relu %b : f32[]\n  %b = constant value=1 : f32[]\n  return %a\n}\n",
       "%b is used before its definition at line 3", 2, 13},
      {"graph @g() -> f32[] {\n  %a = constant value=1 : f32[]\n  %a = constant value=2 : f32[]\n  return %a\n}\n",
       "redefinition of %a; the first definition is at line 2", 3, 3},
      {"graph @g() -> f32[] {\n  %a = frobnicate : f32[]\n  return %a\n}\n", "unknown op 'frobnicate'", 2, 8},
      {"graph @g(%x: f32[2]) -> f32[2] {\n  %a = relu %x axis=1 : f32[2]\n  return %a\n}\n",
       "unknown attribute 'axis' for op 'relu'; it takes none", 2, 16},
      {"dim B = 99999999999999999999\n", "integer '99999999999999999999' is too large (the limit is 2^63-1)", 1, 9},
      {"graph @g() -> f33[] {\n", "unknown dtype 'f33'; use f32, f16, bf16, f64, i32, i64 or bool", 1, 15},
      {"graph @g() -> f32[] {\n  %a = constant value=1 : f32[]\n", "@g ends without 'return'", 3, 1},
      {"dim B = 2\n\x01", "unexpected byte 0x01; IR text is ASCII outside strings and comments", 2, 1},
      {"graph @g(%x: f32[2]) -> f32[2] {\n  %a = relu %x layer=\"x\n", "unterminated string; close it with '\"'", 2,
       22},
  };
  for (const ErrorCase& c : cases) {
    try {
      parse_module_text("e.pf", c.text);
      ADD_FAILURE() << "no error for: " << c.text;
    } catch (const Error& e) {
      EXPECT_EQ(e.message(), c.message);
      EXPECT_EQ(e.location().line, c.line) << c.message;
      EXPECT_EQ(e.location().col, c.col) << c.message;
    }
  }
}

TEST(Parser, RenderQuotesTheLineWithACaret) {
  try {
    parse_module_text("x.pf", "graph @g(%x: f32[2]) -> f32[2] {\n\t%a = relu %q : f32[2]\n  return %a\n}\n");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.render(), "x.pf:2:12: error: use of undefined value %q\n\t%a = relu %q : f32[2]\n\t          ^\n");
  }
}

TEST(Parser, DeepNestingIsAnErrorNotACrash) {
  std::string text = "dim A = 1\ngraph @g(%x: f32[" + std::string(10000, '(') + "A" + std::string(10000, ')') + "]) -> f32[] {\n";
  try {
    parse_module_text("deep.pf", text);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "dimension expression is nested too deeply");
  }
}

}  // namespace
}  // namespace pf
