// A product split between two stages (its weight's rows in two pieces)
// trains the numbers of the whole model on one device under every schedule,
// and weights files hold the weight whole, whatever the plan splits.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ir/param_piece.h"
#include "ir/verifier.h"
#include "partitioner/plan_stages.h"
#include "partitioner/product_split.h"
#include "passes/pass.h"
#include "runtime/parameter_pieces.h"
#include "runtime/safetensors.h"
#include "tests/error_of.h"
#include "tests/runtime/pipeline_equivalence.h"

namespace pf {
namespace {

using equivalence::kBatch;
using equivalence::kMlp;
using equivalence::kSteps;
using testing_support::error_of;

// The tiny MLP (6 -> 8 -> 8 x 6 -> 5) with fc.2's product split at row
// `rows` of its 8, and stage 1 beginning between its two parts (after the
// first part's product); the other stages cut at layers.
Plan split_plan(ScheduleKind kind, int micro, int64_t rows) {
  Module m = equivalence::load(kMlp);
  DimBinding b = equivalence::bind(m, kMlp, kBatch / micro);
  PassContext ctx{b};
  verify_module(m, b, VerifyOptions{true});
  run_passes(m, {"inline", "shape"}, ctx);
  Function& g = m.graph();
  const int product = g.values[g.find_value("fc.2.mm")].def_op;
  EXPECT_TRUE(split_product_rows(g, product, rows));
  verify_module(m, b, VerifyOptions{true});
  const int first_part = g.values[g.find_value("fc.2.mm.part_a")].def_op;
  const std::vector<int> cuts = {first_part + 1, g.values[g.find_value("fc.4.mm")].def_op - 2};
  return plan_for_cuts(m, b, cuts, {}, make_schedule(kind, 3, micro));
}

std::optional<ParamPiece> piece_of(const PlanStage& stage, const std::string& name) {
  for (const PlanParam& p : stage.params)
    if (p.name == name) return p.piece;
  return std::nullopt;
}

// The reference's tensors as the pieces hold them: rows of the whole.
std::map<std::string, std::vector<float>> as_pieces(const std::map<std::string, std::vector<float>>& whole,
                                                    const Plan& plan) {
  std::map<std::string, std::vector<float>> out = whole;
  for (const auto& [name, part] : plan_pieces(plan)) {
    const std::vector<float>& w = whole.at(part.piece.whole);
    const int64_t row = static_cast<int64_t>(w.size()) / part.piece.whole_rows;
    out[name].assign(w.begin() + part.piece.begin * row, w.begin() + part.piece.end * row);
  }
  return out;
}

TEST(ProductSplit, TrainsTheNumbersOfOneDeviceUnderEverySchedule) {
  const equivalence::Reference ref = equivalence::single_device(kMlp);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1})
    for (int64_t rows : {1, 5}) {
      SCOPED_TRACE(fmt::format("{} rows {}", schedule_kind_name(kind), rows));
      const Plan plan = split_plan(kind, 4, rows);
      ASSERT_EQ(plan.stages.size(), 3u);
      // The pieces sit on either side of the boundary.
      EXPECT_EQ(piece_of(plan.stages[0], fmt::format("fc.2.w_rows0_{}", rows)), (ParamPiece{"fc.2.w", 0, rows, 8}));
      EXPECT_EQ(piece_of(plan.stages[1], fmt::format("fc.2.w_rows{}_8", rows)), (ParamPiece{"fc.2.w", rows, 8, 8}));
      PipelineOptions options;
      options.train = equivalence::sgd();
      options.timeout_s = 20;
      auto pipeline = Pipeline::from_plan(plan, options);
      pipeline->initialize(7);
      pipeline->start();
      Module full = equivalence::load(kMlp);
      verify_module(full, equivalence::bind(full, kMlp, kBatch));
      for (int step = 0; step < kSteps; ++step) {
        equivalence::Batch batch = equivalence::make_batch(full.graph(), step);
        const double loss = pipeline->train_step(batch.named).loss;
        EXPECT_NEAR(loss, ref.losses[step], 1e-5 * std::fabs(ref.losses[step])) << "step " << step;
        if (step == 0)
          equivalence::expect_tensors(*pipeline, as_pieces(ref.first_grads, plan), true, 1e-5, "gradient of");
      }
      equivalence::expect_tensors(*pipeline, as_pieces(ref.weights, plan), false, 1e-5, "weight");
      // Saved, the weight is whole again: the reference's.
      SafeTensors saved;
      pipeline->save_values(saved);
      join_pieces(saved, plan_pieces(plan));
      EXPECT_FALSE(saved.contains(fmt::format("fc.2.w_rows0_{}", rows)));
      const std::span<const float> whole = saved.at("fc.2.w").view<float>();
      const std::vector<float>& want = ref.weights.at("fc.2.w");
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(whole[i], want[i], 1e-5) << "fc.2.w[" << i << "]";
    }
}

// w is 3 x 2, held as rows [0, 1) and [1, 3) (or only the first of them).
ParameterPieces pieces_of_w(bool both = true) {
  ParameterPieces out;
  PieceOfParameter first;
  first.piece = ParamPiece{"w", 0, 1, 3};
  first.type = TensorType{DType::f32, {1, 2}};
  out.emplace("w_rows0_1", first);
  if (!both) return out;
  PieceOfParameter second;
  second.piece = ParamPiece{"w", 1, 3, 3};
  second.type = TensorType{DType::f32, {2, 2}};
  out.emplace("w_rows1_3", second);
  return out;
}

SafeTensors weights_of(const std::map<std::string, std::pair<Shape, std::vector<float>>>& tensors) {
  SafeTensors out;
  for (const auto& [name, t] : tensors) out.add(name, TensorType{DType::f32, t.first}, t.second.data());
  return out;
}

TEST(ParameterPieces, CutAndJoinAreInverseForWeightsAndOptimizerState) {
  // "w.exp_avg" follows w, "w.other" (another tensor whose name extends
  // w's) of another shape does not.
  const ParameterPieces pieces = pieces_of_w();
  SafeTensors file = weights_of({{"w", {{3, 2}, {1, 2, 3, 4, 5, 6}}},
                                 {"w.exp_avg", {{3, 2}, {7, 8, 9, 10, 11, 12}}},
                                 {"w.other", {{4}, {0, 0, 0, 0}}},
                                 {"b", {{2}, {1, 1}}}});
  cut_pieces(file, pieces);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"b", "w.other", "w_rows0_1", "w_rows0_1.exp_avg", "w_rows1_3",
                                                    "w_rows1_3.exp_avg"}));
  EXPECT_EQ(std::vector<float>(file.at("w_rows1_3").view<float>().begin(), file.at("w_rows1_3").view<float>().end()),
            (std::vector<float>{3, 4, 5, 6}));
  EXPECT_EQ(file.at("w_rows0_1.exp_avg").type.str(), "f32[1,2]");
  join_pieces(file, pieces);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"b", "w", "w.exp_avg", "w.other"}));
  const std::span<const float> w = file.at("w.exp_avg").view<float>();
  EXPECT_EQ(std::vector<float>(w.begin(), w.end()), (std::vector<float>{7, 8, 9, 10, 11, 12}));
  // The text a checkpoint's index keeps gives the same joins.
  EXPECT_EQ(pieces_from_text(pieces_to_text(pieces), "ck").at("w_rows1_3").piece, (ParamPiece{"w", 1, 3, 3}));
}

TEST(ParameterPieces, ColumnsOfEachBlockAreCutAndJoinedInPlace) {
  // w is 2 x 6: three blocks of two columns (q, k and v side by side), and
  // each of two ranks holds one column of every block, as a fused q, k, v
  // projection is shared out under tensor parallelism.
  ParameterPieces pieces;
  for (int64_t r = 0; r < 2; ++r) {
    PieceOfParameter part;
    part.piece = ParamPiece{"w", r, r + 1, 6, 1, 3};
    part.type = TensorType{DType::f32, {2, 3}};
    pieces.emplace(fmt::format("w.tp{}", r), part);
  }
  SafeTensors file = weights_of({{"w", {{2, 6}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}}});
  cut_pieces(file, pieces);
  const auto values = [&](const std::string& name) {
    const std::span<const float> v = file.at(name).view<float>();
    return std::vector<float>(v.begin(), v.end());
  };
  EXPECT_EQ(values("w.tp0"), (std::vector<float>{1, 3, 5, 7, 9, 11}));
  EXPECT_EQ(values("w.tp1"), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  join_pieces(file, pieces);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"w"}));
  EXPECT_EQ(values("w"), (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(pieces_from_text(pieces_to_text(pieces), "ck").at("w.tp1").piece, (ParamPiece{"w", 1, 2, 6, 1, 3}));
  EXPECT_EQ(pieces.at("w.tp1").piece.str(), "columns [1, 2) of each of 3 blocks");
}

TEST(ParameterPieces, JoinLeavesPiecesWithoutAllTheirRows) {
  const ParameterPieces pieces = pieces_of_w();
  SafeTensors file = weights_of({{"w_rows0_1", {{1, 2}, {1, 2}}}});
  join_pieces(file, pieces);
  EXPECT_EQ(file.names(), std::vector<std::string>{"w_rows0_1"});
}

TEST(ParameterPieces, AWholeOfAnotherShapeIsAnError) {
  const ParameterPieces pieces = pieces_of_w(false);
  SafeTensors file = weights_of({{"w", {{3, 4}, std::vector<float>(12)}}});
  EXPECT_EQ(error_of([&] { cut_pieces(file, pieces); }),
            "<memory>: w is f32[3,4] here, but the plan holds rows [0, 1) of it as a f32[3,2]");
  EXPECT_EQ(error_of([] { pieces_from_text("{\"w_rows0_1\": {\"piece_of\": \"w\"}}", "ck"); }),
            "ck: the pieces of split parameters are not in the form this pipeforge writes");
}

}  // namespace
}  // namespace pf
