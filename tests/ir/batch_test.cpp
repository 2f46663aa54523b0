// Which inputs of a model carry the batch: decided from their types as written, with a located error for an input
// that names the batch where a micro-batch split cannot honour it.
#include "ir/batch.h"

#include <gtest/gtest.h>

#include "ir/diagnostic.h"
#include "ir/parser.h"

namespace pf {
namespace {

Module parsed(const std::string& text) { return parse_module_text("model.pf", text); }

TEST(Batch, InputsLedByTheBatchSymbolAreSplitTheOthersWhole) {
  const Module m = parsed(R"(dim B = 4
dim T = 3
dim D = 2

graph @rope(%x: f32[B,T,D], %cos: f32[T,D], %targets: i32[B,T], %scale: f32[]) -> f32[] {
  %y = mul %x, %cos : f32[B,T,D]
  %z = mul %y, %scale : f32[B,T,D]
  %loss = reduce_mean %z axes=[0,1,2] : f32[]
  return %loss
}
)");
  EXPECT_EQ(batch_dimension(m.graph()), "B");
  EXPECT_EQ(whole_inputs(m.graph()), (std::vector<std::string>{"cos", "scale"}));
}

/// `whole_inputs` on the model's graph, its error rendered.
std::string whole_inputs_error(const std::string& text) {
  try {
    whole_inputs(parsed(text).graph());
  } catch (const Error& e) {
    return e.render();
  }
  return "ok";
}

TEST(Batch, AFirstInputWithoutASymbolicLeadingDimensionHasNoBatch) {
  EXPECT_EQ(whole_inputs_error(R"(graph @fixed(%x: f32[4,2], %t: f32[2]) -> f32[] {
  %y = mul %x, %t : f32[4,2]
  %loss = reduce_mean %y axes=[0,1] : f32[]
  return %loss
}
)"),
            "model.pf:1:7: error: @fixed's first input has no symbolic batch dimension to split into micro-batches\n"
            "graph @fixed(%x: f32[4,2], %t: f32[2]) -> f32[] {\n"
            "      ^\n");
}

TEST(Batch, TheBatchAtAnotherAxisOrInAnExpressionIsAnError) {
  EXPECT_EQ(whole_inputs_error(R"(dim B = 4
dim T = 3

graph @m(%x: f32[B,T], %bias: f32[T,B]) -> f32[] {
  %loss = reduce_mean %x axes=[0,1] : f32[]
  return %loss
}
)"),
            "model.pf:4:24: error: input %bias is f32[T,B]: it names the batch dimension B at axis 1; an input carries "
            "the batch as its first axis, or does not name it at all\n"
            "graph @m(%x: f32[B,T], %bias: f32[T,B]) -> f32[] {\n"
            "                       ^\n");
  const std::string flat = whole_inputs_error(R"(dim B = 4
dim T = 3

graph @m(%x: f32[B,T], %flat: f32[B*T]) -> f32[] {
  %loss = reduce_mean %x axes=[0,1] : f32[]
  return %loss
}
)");
  EXPECT_NE(flat.find("input %flat is f32[B*T]: it names the batch dimension B at axis 0"), std::string::npos) << flat;
}

}  // namespace
}  // namespace pf
