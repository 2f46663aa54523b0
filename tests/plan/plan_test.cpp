// The plan file: JSON round trip, its layout, and each check made on load.
#include "plan/plan.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>

#include "ir/diagnostic.h"

namespace pf {
namespace {

using Json = nlohmann::ordered_json;

// Two stages of a tiny model: stage 0 embeds x with the tied weight %wte,
// stage 1 applies %w1, projects back through %wte and takes an MSE loss.
// The training programs are what autodiff writes, by hand; the forward
// programs alone make an inference plan.
constexpr const char* kForward0 = R"(dim B = 4

graph @stage0(%x: f32[B,8]) -> f32[B,8] {
  %wte = param init=normal(0.02) layer="embed" : f32[8,8]
  %h = matmul %x, %wte layer="embed" : f32[B,8]
  return %h
}
)";

constexpr const char* kBackward0 = R"(dim B = 4

graph @stage0(%x: f32[B,8]) -> (f32[B,8], f32[B,8]) {
  %wte = param init=normal(0.02) layer="embed" : f32[8,8]
  %h = matmul %x, %wte layer="embed" : f32[B,8]
  return %h, %x
}

func @stage0.backward(%h.grad: f32[B,8], %x: f32[B,8]) -> f32[8,8] {
  %wte.grad = matmul %x, %h.grad transpose_a=true : f32[8,8]
  return %wte.grad
}
)";

constexpr const char* kForward1 = R"(dim B = 4

graph @stage1(%h: f32[B,8], %y: f32[B,8]) -> f32[] {
  %w1 = param init=xavier layer="l1" : f32[8,8]
  %a = matmul %h, %w1 layer="l1" : f32[B,8]
  %wte = param init=normal(0.02) layer="head" : f32[8,8]
  %logits = matmul %a, %wte transpose_b=true layer="head" : f32[B,8]
  %loss = mse_loss %logits, %y layer="head" : f32[]
  return %loss
}
)";

constexpr const char* kBackward1 = R"(dim B = 4

graph @stage1(%h: f32[B,8], %y: f32[B,8]) -> (f32[], f32[B,8], f32[B,8], f32[B,8], f32[B,8]) {
  %w1 = param init=xavier layer="l1" : f32[8,8]
  %a = matmul %h, %w1 layer="l1" : f32[B,8]
  %wte = param init=normal(0.02) layer="head" : f32[8,8]
  %logits = matmul %a, %wte transpose_b=true layer="head" : f32[B,8]
  %loss = mse_loss %logits, %y layer="head" : f32[]
  return %loss, %h, %a, %logits, %y
}

func @stage1.backward(%loss.grad: f32[], %h: f32[B,8], %a: f32[B,8], %logits: f32[B,8], %y: f32[B,8]) -> (f32[B,8], f32[8,8], f32[8,8]) {
  %w1 = param init=xavier : f32[8,8]
  %wte = param init=normal(0.02) : f32[8,8]
  %diff = sub %logits, %y : f32[B,8]
  %two_over_n = constant value=0.0625 : f32[]
  %scale = mul %two_over_n, %loss.grad : f32[]
  %logits.grad = mul %diff, %scale : f32[B,8]
  %a.grad = matmul %logits.grad, %wte : f32[B,8]
  %wte.grad = matmul %logits.grad, %a transpose_a=true : f32[8,8]
  %w1.grad = matmul %h, %a.grad transpose_a=true : f32[8,8]
  %h.grad = matmul %a.grad, %w1 transpose_b=true : f32[B,8]
  return %h.grad, %w1.grad, %wte.grad
}
)";

const TensorType kAct{DType::f32, {4, 8}};
const TensorType kWeight{DType::f32, {8, 8}};

Plan two_stage_plan() {
  Plan plan;
  plan.model_name = "tiny";
  plan.model_source = "tiny.pf";
  plan.model_hash = "fnv1a:0123456789abcdef";
  plan.binding = {{"B", 4}};
  plan.devices = {{"cpu:0", "cpu", int64_t{8} << 30, 1}, {"cpu:1", "cpu", int64_t{8} << 30, 1}};
  plan.schedule = "1f1b";
  plan.microbatches = 4;
  plan.loss_stage_output = "loss";
  plan.predicted = {0.0031, 2.5, 1.25, 1.1, 0.2};

  PlanStage s0;
  s0.index = 0;
  s0.device = 0;
  s0.layers = {"embed"};
  s0.program = kBackward0;
  s0.gradients = GradientProgram{"stage0.backward", 1, {0}, {"h.grad"}, {"x"}, {}, {"wte"}, {}};
  s0.params = {{"wte", kWeight, "normal(0.02)", {1}, {}}};
  s0.inputs = {{"x", kAct, -1}};
  s0.send = {{"h", kAct, 1}};
  s0.predicted = {0.001, 0.002, 1.5e-6, 0.0030015, 256, 128, 1280, 128};

  PlanStage s1;
  s1.index = 1;
  s1.device = 1;
  s1.layers = {"l1", "head"};
  s1.program = kBackward1;
  s1.gradients = GradientProgram{
      "stage1.backward", 1, {0}, {"loss.grad"}, {"h", "a", "logits", "y"}, {"h"}, {"w1", "wte"}, {}};
  s1.params = {{"w1", kWeight, "xavier", {}, {}}, {"wte", kWeight, "normal(0.02)", {0}, {}}};
  s1.inputs = {{"y", kAct, -1}};
  s1.recv = {{"h", kAct, 0}};
  s1.predicted = {0.0012, 0.0018, 1.5e-6, 0.0030015, 512, 512, 3584, 0};

  plan.stages = {s0, s1};
  plan.ranks = {{0, 0, 0, 0, {0}}, {1, 1, 0, 0, {1}}};
  return plan;
}

// Replaces the first `from` in `text`, which must hold it.
void replace_once(std::string& text, std::string_view from, std::string_view to) {
  size_t at = text.find(from);
  if (at == std::string::npos) throw std::logic_error("no '" + std::string(from) + "' in the program");
  text = text.substr(0, at) + std::string(to) + text.substr(at + from.size());
}

// The error a plan gives on load, "ok" when it loads.
std::string load_error(const std::string& text) {
  try {
    plan_from_json(text, "plan.json");
  } catch (const Error& e) {
    return e.message();
  }
  return "ok";
}

std::string plan_error(const std::function<void(Plan&)>& edit) {
  Plan plan = two_stage_plan();
  edit(plan);
  return load_error(plan_to_json(plan));
}

std::string json_error(const std::function<void(Json&)>& edit) {
  Json doc = Json::parse(plan_to_json(two_stage_plan()));
  edit(doc);
  return load_error(doc.dump());
}

TEST(Plan, RoundTripsThroughJson) {
  Plan plan = two_stage_plan();
  std::string text = plan_to_json(plan);
  Plan back = plan_from_json(text, "plan.json");
  EXPECT_EQ(back, plan);
  EXPECT_EQ(plan_to_json(back), text);
}

TEST(Plan, JsonIsReadable) {
  std::string text = plan_to_json(two_stage_plan());
  EXPECT_TRUE(text.starts_with("{\n  \"format\": \"pipeforge-plan\",\n  \"version\": 2,\n")) << text;
  // Small objects on one line; programs one IR line per JSON line.
  EXPECT_NE(text.find(R"(    "binding": {"B": 4}
  },)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"("recv": [{"name": "h", "type": "f32[4,8]", "peer": 0}],)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"j({"name": "wte", "type": "f32[8,8]", "init": "normal(0.02)", "shared_with": [1]})j"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("      \"program\": [\n        \"dim B = 4\",\n        \"\",\n        \"graph @stage0(%x: "
                      "f32[B,8]) -> (f32[B,8], f32[B,8]) {\",\n"),
            std::string::npos)
      << text;
  for (std::string_view line : {"      \"gradients\": {\n        \"backward\": \"stage0.backward\",\n        "
                                "\"results\": 1,\n        \"outputs\": [0],\n        \"seeds\": [\"h.grad\"],\n",
                                "\"layers\": [\"l1\", \"head\"]"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

// A batch input read whole by every micro-batch says so; the others carry no
// mark, as in plans written before the field.
TEST(Plan, MarksBatchInputsReadWhole) {
  Plan plan = two_stage_plan();
  plan.stages[1].inputs[0].whole = true;
  const std::string text = plan_to_json(plan);
  EXPECT_NE(text.find(R"("inputs": [{"name": "x", "type": "f32[4,8]"}],)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("inputs": [{"name": "y", "type": "f32[4,8]", "whole": true}],)"), std::string::npos) << text;
  EXPECT_EQ(plan_from_json(text, "plan.json"), plan);
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["inputs"][0]["whole"] = "yes"; }),
            "plan.json: stages[0].inputs[0].whole must be true or false");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[1].inputs[0] = p.stages[0].inputs[0];  // stage 1 reads x too, but whole
              p.stages[1].inputs[0].whole = true;
            }),
            "plan.json: stages read batch input x differently: f32[4,8] and f32[4,8] whole");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[0].inputs[0].type = TensorType{DType::f32, {}}; }),
            "plan.json: stage 0 reads x f32[] split into micro-batches, but it has no axis to split; mark it whole");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["send"][0]["whole"] = true; }),
            "plan.json: stages[0].send[0] has an unknown field \"whole\"");
}

TEST(Plan, RecordsItsComputeDtype) {
  Plan plan = two_stage_plan();
  EXPECT_NE(plan_to_json(plan).find("\"dtype\": \"f32\","), std::string::npos);
  plan.dtype = DType::bf16;
  EXPECT_EQ(plan_from_json(plan_to_json(plan), "plan.json"), plan);
  // A plan written before the field computes in f32.
  Json old = Json::parse(plan_to_json(two_stage_plan()));
  old.erase("dtype");
  EXPECT_EQ(plan_from_json(old.dump(), "plan.json").dtype, DType::f32);
  EXPECT_EQ(json_error([](Json& j) { j["dtype"] = "f8"; }), "plan.json: dtype must be \"f32\" or \"bf16\", got \"f8\"");
  EXPECT_EQ(json_error([](Json& j) { j["dtype"] = 16; }), "plan.json: dtype must be a string");
  EXPECT_EQ(parse_compute_dtype("bf16", "--dtype"), DType::bf16);
  try {
    parse_compute_dtype("f16", "--dtype");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "--dtype: unknown compute dtype 'f16'; use f32 or bf16");
  }
}

// Tensor parallelism is recorded (the runtime refuses it); the predicted
// step time and utilisation too. Plans written before them read 1 and 0.
TEST(Plan, RecordsTensorParallelismAndThePredictedStep) {
  Plan plan = two_stage_plan();
  plan.tensor_parallel = 8;
  plan.ranks = replicated_ranks(plan.stages, 2, 1, 8);
  plan.predicted.step_s = 12.5;
  plan.predicted.mfu = 0.25;
  const std::string text = plan_to_json(plan);
  EXPECT_NE(text.find("\"tensor_parallel\": 8,"), std::string::npos) << text;
  EXPECT_NE(text.find("\"step_s\": 12.5,\n    \"mfu\": 0.25\n"), std::string::npos) << text;
  EXPECT_EQ(plan_from_json(text, "plan.json"), plan);
  Json old = Json::parse(text);
  old.erase("tensor_parallel");
  for (Json& rank : old["ranks"]) rank.erase("shard");
  old["ranks"].erase(old["ranks"].begin() + 2, old["ranks"].end());  // one place: the ranks of place 0
  old["predicted"].erase("step_s");
  old["predicted"].erase("mfu");
  Plan back = plan_from_json(old.dump(), "plan.json");
  EXPECT_EQ(back.tensor_parallel, 1);
  EXPECT_EQ(back.predicted.step_s, 0.0);
  EXPECT_EQ(back.predicted.mfu, 0.0);
  EXPECT_EQ(json_error([](Json& j) { j["tensor_parallel"] = 0; }), "plan.json: tensor_parallel must be at least 1, got 0");
  EXPECT_EQ(json_error([](Json& j) { j["predicted"]["mfu"] = -1; }), "plan.json: predicted.mfu must be at least 0, got -1");
}

// A tensor-parallel plan's stages hold each rank's part (its program and
// the tables that go with it), checked like the stage's own.
TEST(Plan, TensorParallelStagesHoldEachRanksPart) {
  Plan plan = two_stage_plan();
  plan.tensor_parallel = 2;
  plan.ranks = replicated_ranks(plan.stages, 2, 1, 2);
  for (PlanStage& s : plan.stages)
    for (int r = 0; r < 2; ++r) s.shards.push_back({s.program, s.params, s.gradients, s.split});
  plan.stages[1].shards[1].params[0].init = "kaiming";
  replace_once(plan.stages[1].shards[1].program, "%w1 = param init=xavier", "%w1 = param init=kaiming");
  const std::string text = plan_to_json(plan);
  EXPECT_EQ(plan_from_json(text, "plan.json"), plan);
  const PlanStage part = shard_stage(plan.stages[1], 1);
  EXPECT_EQ(part.program, plan.stages[1].shards[1].program);
  EXPECT_EQ(part.params[0].init, "kaiming");
  EXPECT_TRUE(part.shards.empty());
  EXPECT_EQ(part.send, plan.stages[1].send);
  EXPECT_EQ(plan_error([](Plan& p) {
              p.tensor_parallel = 2;
              p.ranks = replicated_ranks(p.stages, 2, 1, 2);
              p.stages[0].shards.push_back({p.stages[0].program, p.stages[0].params, p.stages[0].gradients, {}});
            }),
            "plan.json: stage 0 holds the parts of 1 tensor-parallel ranks, but the plan's tensor_parallel is 2");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.tensor_parallel = 2;
              p.ranks = replicated_ranks(p.stages, 2, 1, 2);
              for (int r = 0; r < 2; ++r) p.stages[1].shards.push_back({p.stages[1].program, {}, p.stages[1].gradients, {}});
            }),
            "plan.json: stage 1's program has parameter %w1, which the stage does not list (in the part of rank 0 of "
            "its tensor-parallel group)");
}

// Replicas sharing the experts out: each stage holds a part per block of
// the experts, part k run by replicas k, k + X...; the parameters a part
// lists beyond the stage's own are its replicas' alone. Plans written before
// the field read 1.
TEST(Plan, ReplicasSharingTheExpertsHoldAPartEach) {
  auto shared = [](Plan& p) {
    p.expert_parallel = 2;
    for (const char* d : {"cpu:2", "cpu:3"}) p.devices.push_back({d, "cpu", int64_t{8} << 30, 1});
    p.ranks = replicated_ranks(p.stages, 2, 2);
    for (PlanStage& s : p.stages)
      for (int k = 0; k < 2; ++k) s.shards.push_back({s.program, s.params, s.gradients, s.split});
  };
  Plan plan = two_stage_plan();
  shared(plan);
  const std::string text = plan_to_json(plan);
  EXPECT_NE(text.find("\"expert_parallel\": 2"), std::string::npos) << text;
  EXPECT_EQ(plan_from_json(text, "plan.json"), plan);
  EXPECT_EQ(plan_from_json(plan_to_json(two_stage_plan()), "plan.json").expert_parallel, 1);
  EXPECT_EQ(stage_part(plan, plan.ranks[3]), 1);
  EXPECT_EQ(rank_of_part(plan, 1, 1), 3);
  EXPECT_TRUE(replica_own_params(plan, plan.stages[1], 1).empty());
  plan.stages[1].shards[1].params[0].name = "w1.ep1";
  EXPECT_EQ(replica_own_params(plan, plan.stages[1], 1), std::vector<std::string>{"w1.ep1"});
  // Four replicas in two groups: replica 3 holds block 1 in group 1, as replica 1 does in group 0.
  Plan four = two_stage_plan();
  shared(four);
  for (const char* d : {"cpu:4", "cpu:5", "cpu:6", "cpu:7"}) four.devices.push_back({d, "cpu", int64_t{8} << 30, 1});
  four.ranks = replicated_ranks(four.stages, 2, 4);
  EXPECT_EQ(plan_from_json(plan_to_json(four), "plan.json"), four);
  EXPECT_EQ(stage_part(four, four.ranks[7]), 1);
  EXPECT_EQ(expert_group_replicas(four, 3), (std::vector<int>{2, 3}));
  EXPECT_EQ(expert_block_replicas(four, 3), (std::vector<int>{1, 3}));
  EXPECT_EQ(plan_error([&](Plan& p) {
              shared(p);
              p.expert_parallel = 3;
            }),
            "plan.json: expert_parallel is 3, which does not divide the 2 data-parallel replicas the plan's ranks "
            "form into groups sharing the experts out");
  EXPECT_EQ(plan_error([&](Plan& p) {
              shared(p);
              p.stages[0].shards.pop_back();
            }),
            "plan.json: stage 0 holds 1 blocks of the experts, but the plan's expert_parallel is 2");
}

TEST(Plan, InferencePlanHasNoBackward) {
  Plan plan = two_stage_plan();
  plan.loss_stage_output.clear();
  plan.stages[0].program = kForward0;
  plan.stages[1].program = kForward1;
  for (PlanStage& s : plan.stages) s.gradients.reset();
  std::string text = plan_to_json(plan);
  EXPECT_EQ(text.find("\"gradients\""), std::string::npos);
  EXPECT_EQ(plan_from_json(text, "plan.json"), plan);
  EXPECT_EQ(plan_error([](Plan& p) {
              p.loss_stage_output.clear();
              p.stages[1].program = kForward1;
              p.stages[1].gradients.reset();
            }),
            "plan.json: stage 0 has gradients, but the plan has no loss to train");
}

TEST(Plan, RefusesToWriteWhatJsonCannotHold) {
  Plan plan = two_stage_plan();
  plan.predicted.speedup_vs_equal_params = std::numeric_limits<double>::infinity();
  try {
    plan_to_json(plan);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cannot write the plan: the predicted speedup_vs_equal_params is inf");
  }
  plan = two_stage_plan();
  plan.stages[1].predicted.time_s = std::nan("");
  EXPECT_THROW(plan_to_json(plan), Error);
}

TEST(Plan, SavesThroughATemporaryFile) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("pf_plan_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "plan.json").string();
  {
    std::ofstream old(path);
    old << "an older plan";
  }
  Plan plan = two_stage_plan();
  save_plan(plan, path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(load_plan(path), plan);
  EXPECT_THROW(save_plan(plan, (dir / "no" / "such" / "dir.json").string()), Error);
  std::filesystem::remove_all(dir);
  try {
    load_plan(path);
    FAIL() << "loaded a removed file";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cannot open '" + path + "'");
  }
}

TEST(Plan, SyntaxErrorsAreLocated) {
  try {
    plan_from_json("{\n  \"format\": \"pipeforge-plan\",\n  \"version\": 1,,\n}\n", "plan.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "not valid JSON: syntax error while parsing object key - unexpected ','; expected string "
              "literal");
    EXPECT_EQ(e.location().line, 3);
    EXPECT_EQ(e.location().col, 16);
    EXPECT_EQ(e.render().substr(0, 16), "plan.json:3:16: ");
  }
}

TEST(Plan, RejectsOtherFilesAndVersions) {
  EXPECT_EQ(load_error("[1, 2]"), "plan.json: not a pipeforge plan (no \"format\": \"pipeforge-plan\")");
  EXPECT_EQ(json_error([](Json& j) { j["format"] = "pipeforge-profile"; }),
            "plan.json: not a pipeforge plan (no \"format\": \"pipeforge-plan\")");
  EXPECT_EQ(json_error([](Json& j) { j["version"] = 3; }),
            "plan.json: version 3 is not supported by this pipeforge (it reads version 2)");
  EXPECT_EQ(json_error([](Json& j) { j["version"] = 1; }),
            "plan.json: version 1 was written by an older pipeforge (this one reads version 2); compile the model "
            "again");
  EXPECT_EQ(json_error([](Json& j) { j["version"] = "1"; }), "plan.json: version must be an integer");
  EXPECT_EQ(json_error([](Json& j) { j.erase("version"); }), "plan.json: no \"version\"");
}

TEST(Plan, ChecksFieldsAndTheirTypes) {
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0].erase("device"); }), "plan.json: stages[0] has no \"device\"");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["devcie"] = 0; }),
            "plan.json: stages[0] has an unknown field \"devcie\"");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][1]["device"] = "cpu:1"; }),
            "plan.json: stages[1].device must be an integer");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][1]["recv"][0]["type"] = "f32[4,x]"; }),
            "plan.json: stages[1].recv[0].type: 'f32[4,x]' is not a tensor type such as f32[8,64]");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["send"][0]["type"] = "f32[4294967296,4294967296]"; }),
            "plan.json: stages[0].send[0].type: 'f32[4294967296,4294967296]' is not a tensor type such as f32[8,64]");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["program"][2] = 7; }),
            "plan.json: stages[0].program[2] must be a string");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["predicted"]["time_s"] = -1; }),
            "plan.json: stages[0].predicted.time_s must be at least 0, got -1");
  EXPECT_EQ(json_error([](Json& j) { j["devices"][0]["kind"] = "tpu"; }),
            "plan.json: devices[0].kind must be \"cpu\" or \"cuda\", got \"tpu\"");
  EXPECT_EQ(json_error([](Json& j) { j["model"]["binding"]["B"] = 0; }),
            "plan.json: model.binding.B must be at least 1, got 0");
  EXPECT_EQ(json_error([](Json& j) { j["schedule"]["microbatches"] = 0; }),
            "plan.json: schedule.microbatches must be at least 1, got 0");
  EXPECT_EQ(json_error([](Json& j) { j["schedule"]["virtual_stages"] = 0; }),
            "plan.json: schedule.virtual_stages must be at least 1, got 0");
}

TEST(Plan, ChecksStagesAndDevices) {
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].index = 2; }),
            "plan.json: stages[1] has index 2; stages must be numbered 0..1 in order");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].device = 2; }),
            "plan.json: stage 1 runs on device 2, but the plan has 2 devices (0..1)");
  EXPECT_EQ(plan_error([](Plan& p) { p.devices.clear(); }), "plan.json: the plan has no devices");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages.clear(); }), "plan.json: the plan has no stages");
  EXPECT_EQ(plan_error([](Plan& p) { p.devices[1].name = "cpu:0"; }),
            "plan.json: devices 0 and 1 are both named cpu:0");
}

TEST(Plan, EveryReceivedTensorIsSent) {
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].recv[0].name = "h.3"; }),
            "plan.json: stage 1 receives h.3 f32[4,8] from stage 0, but stage 0 sends no h.3");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[1].recv[0].type.shape = {4, 16};
            }),
            "plan.json: stage 1 receives h f32[4,16] from stage 0, but stage 0 sends h as f32[4,8]");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].recv.clear(); }),
            "plan.json: stage 0 sends h f32[4,8] to stage 1, but stage 1 receives no h from stage 0");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].recv[0].peer = 1; }), "plan.json: stage 1 receives h from itself");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[0].send[0].peer = 4; }),
            "plan.json: stage 0 sends h to stage 4, but the plan has 2 stages");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].recv.push_back(p.stages[1].recv[0]); }),
            "plan.json: stage 1 receives h twice");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[1].inputs.push_back({"h", kAct, -1});
            }),
            "plan.json: stage 1 both reads h from the batch and receives it");
}

TEST(Plan, TiedParametersAreSymmetric) {
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].params[1].shared_with.clear(); }),
            "plan.json: stage 0 shares parameter wte with stage 1, but stage 1 does not list stage 0 in its "
            "shared_with");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[0].params[0].shared_with.clear();
              p.stages[1].params[1].shared_with.clear();
            }),
            "plan.json: stages 0 and 1 both hold a parameter wte without listing each other in shared_with; a "
            "parameter's name is its checkpoint key, so they must be one tied parameter or be renamed");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[1].params[1].type.shape = {8, 4};
            }),
            "plan.json: parameter wte is f32[8,8] on stage 0 but f32[8,4] on stage 1");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].params[1].init = "zeros"; }),
            "plan.json: parameter wte is initialized with normal(0.02) on stage 0 but zeros on stage 1");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].params[0].shared_with = {0}; }),
            "plan.json: stage 1 shares parameter w1 with stage 0, but stage 0 has no parameter w1");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].params[1].shared_with = {1}; }),
            "plan.json: stage 1 shares parameter wte with itself");
}

TEST(Plan, ProgramsMustParseAndVerify) {
  EXPECT_EQ(plan_error([](Plan& p) { replace_once(p.stages[1].program, "matmul %h", "frobnicate %h"); }),
            "plan.json: stage 1's program: 5:8: unknown op 'frobnicate'\n"
            "  %a = frobnicate %h, %w1 layer=\"l1\" : f32[B,8]\n"
            "       ^");
  EXPECT_EQ(plan_error([](Plan& p) { replace_once(p.stages[0].program, "transpose_a=true", ""); }),
            "plan.json: stage 0's program: 10:15: matmul: contraction sizes differ: f32[4,8] and f32[4,8] "
            "(8 vs 4)\n"
            "  %wte.grad = matmul %x, %h.grad  : f32[8,8]\n"
            "              ^");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[0].program.clear(); }), "plan.json: stage 0 has no program");
}

TEST(Plan, ProgramsAgreeWithTheStageTables) {
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].inputs.clear(); }),
            "plan.json: stage 1's program takes %y f32[4,8], but the stage neither receives it nor reads it from the "
            "batch");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[1].inputs.push_back({"mask", kAct, -1});
            }),
            "plan.json: stage 1 takes mask f32[4,8], but its program has no argument %mask");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].inputs[0].type.dtype = DType::i32; }),
            "plan.json: stage 1 takes y i32[4,8], but its program takes %y f32[4,8]");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].params.erase(p.stages[1].params.begin()); }),
            "plan.json: stage 1's program has parameter %w1, which the stage does not list");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].params[0].init = "kaiming"; }),
            "plan.json: stage 1 lists parameter w1 with init kaiming, but its program has init=xavier");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[1].gradients->stash = {"a", "h", "logits", "y"};
            }),
            "plan.json: stage 1's program: @stage1 returns (loss, h, a, logits, y); the stage's gradient table says its "
            "results, then the stash: (loss, a, h, logits, y)");
  EXPECT_EQ(plan_error([](Plan& p) {
              replace_once(p.stages[0].program, "(%h.grad: f32[B,8], %x: f32[B,8])",
                           "(%x: f32[B,8], %h.grad: f32[B,8])");
            }),
            "plan.json: stage 0's program: @stage0.backward takes (x, h.grad); the stage's gradient table says the "
            "seeds, then the stash: (h.grad, x)");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[0].gradients.reset();
              p.loss_stage_output.clear();
              p.stages[1].gradients.reset();
              p.stages[1].program = kForward1;
              p.stages[0].program =
                  "func @embed(%x: f32[4,8]) -> f32[4,8] {\n  %wte = param init=normal(0.02) : f32[8,8]\n"
                  "  %h = matmul %x, %wte : f32[4,8]\n  return %h\n}\n\n"
                  "graph @stage0(%x: f32[4,8]) -> f32[4,8] {\n  %h = call @embed(%x) scope=\"embed\" : f32[4,8]\n"
                  "  return %h\n}\n";
            }),
            "plan.json: stage 0's program: 8:8: calls @embed; stage programs must be inlined\n"
            "  %h = call @embed(%x) scope=\"embed\" : f32[4,8]\n"
            "       ^");
  EXPECT_EQ(plan_error([](Plan& p) { replace_once(p.stages[0].program, "@stage0.b", "@s0.b"); }),
            "plan.json: stage 0's program has no @stage0.backward (the backward)");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[0].gradients.reset(); }),
            "plan.json: stage 0 has no gradients, but the plan trains (its loss is %loss); compile it again");
  EXPECT_EQ(plan_error([](Plan& p) { p.loss_stage_output = "logits"; }),
            "plan.json: the loss is %logits, but the program of the last stage (1) does not return it");
}

// The runtime binds buffers by the gradient table alone: every count, name
// and order in it is checked against the program.
TEST(Plan, GradientTablesAgreeWithTheProgram) {
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["gradients"]["outputs"] = {3}; }),
            "plan.json: stages[0].gradients.outputs[0] must be a result index below 1");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["gradients"].erase("seeds"); }),
            "plan.json: stages[0].gradients has no \"seeds\"");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[0].gradients->seeds.clear(); }),
            "plan.json: stage 0's gradient table has 0 seeds for 1 differentiated results");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].gradients->input_grads = {"y"}; }),
            "plan.json: stage 1's gradient table differentiates %y, which the stage does not receive");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].gradients->input_grads.clear(); }),
            "plan.json: stage 1's program: @stage1.backward returns 3 values; the stage's gradient table says 2");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].gradients->params = {"wte", "w1"}; }),
            "plan.json: stage 1's gradient table lists parameters (wte, w1); its program declares them in the order "
            "(w1, wte)");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].gradients->recomputed = {"q"}; }),
            "plan.json: stage 1's gradient table recomputes 1 values, but the plan recomputes none");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.recompute = "layers";
              p.stages[1].gradients->recomputed = {"q"};
            }),
            "plan.json: stage 1's gradient table recomputes %q, which its forward and backward do not both compute");
  EXPECT_EQ(json_error([](Json& j) { j["recompute"] = "all"; }),
            "plan.json: recompute must be \"none\", \"layers\" or \"selective\", got \"all\"");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[1].gradients->original_results = 2; }),
            "plan.json: stage 1's program: @stage1 returns (loss, h, a, logits, y); the stage's gradient table says its "
            "results, then the stash: (loss, h, h, a, logits, y)");
  EXPECT_EQ(plan_error([](Plan& p) { replace_once(p.stages[0].program, "-> f32[8,8] {", "-> f32[8,4] {"); }),
            "plan.json: stage 0's program: 11:3: return: result 1 of @stage0.backward is declared f32[8,4], but "
            "%wte.grad is f32[8,8]\n"
            "  return %wte.grad\n"
            "  ^");
}

// A zero-bubble schedule runs each backward in two parts, which the plan
// must hold; no other schedule has them.
TEST(Plan, SplitBackwardsGoWithTheSchedule) {
  EXPECT_EQ(plan_error([](Plan& p) { p.schedule = "zb1"; }),
            "plan.json: stage 0 does not split its backward, but schedule zb1 runs it in two parts");
  EXPECT_EQ(plan_error([](Plan& p) { p.stages[0].split = BackwardSplit{"stage0.backward_input", "w", {}}; }),
            "plan.json: stage 0 splits its backward, but schedule 1f1b runs it whole");
  EXPECT_EQ(plan_error([](Plan& p) {
              p.schedule = "zb1";
              p.stages[0].split = BackwardSplit{"stage0.backward_input", "stage0.backward_weight", {}};
            }),
            "plan.json: stage 0's program has no @stage0.backward_input (the backward's input part)");
  EXPECT_EQ(json_error([](Json& j) { j["stages"][0]["split"] = {{"input", "i"}, {"weight", "w"}}; }),
            "plan.json: stages[0].split has no \"deferred\"");
}

// The topology: every stage run by one rank of each replica, on the stage's
// device in replica 0, and no device shared.
TEST(Plan, RanksRunEveryStageOnItsDevice) {
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks.clear(); }), "plan.json: the plan has no ranks");
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks[1].rank = 2; }),
            "plan.json: ranks[1] has rank 2; ranks must be numbered 0..1 in order");
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks[1].replica = 1; }),
            "plan.json: rank 1 of replica 1 runs other stages than rank 0 of replica 0");
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks[1].replica = 2; }),
            "plan.json: 2 ranks do not make 3 replicas of equal size");
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks[1].device = 0; }),
            "plan.json: rank 1 runs device 0, which another rank runs");
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks[1].stages = {0, 1}; }), "plan.json: stage 0 is run by ranks 0 and 1");
  EXPECT_EQ(plan_error([](Plan& p) { p.ranks[1].stages.clear(); }), "plan.json: rank 1 runs no stage");
  EXPECT_EQ(plan_error([](Plan& p) {
              std::swap(p.ranks[0].device, p.ranks[1].device);
            }),
            "plan.json: rank 0 runs device 1, but its stage 0 is placed on device 0");
  EXPECT_EQ(json_error([](Json& j) { j["ranks"][0]["stages"][0] = "zero"; }),
            "plan.json: ranks[0].stages[0] must be a stage index");
  // Each rank's view: its neighbours and the ranks that share its tied weight.
  const Plan plan = two_stage_plan();
  const RankView view = rank_view(plan, 1);
  EXPECT_EQ(view.stages, std::vector<int>{1});
  EXPECT_EQ(view.neighbours, std::vector<int>{0});
  EXPECT_EQ(view.world, (std::vector<int>{0, 1}));
  ASSERT_EQ(view.tied.size(), 1u);
  EXPECT_EQ(view.tied[0].first, "wte");
  EXPECT_EQ(view.tied[0].second, (std::vector<int>{0, 1}));
  EXPECT_EQ(rank_of_stage(plan, 1), 1);
  EXPECT_EQ(view.replica_ranks, (std::vector<int>{0, 1}));
  ASSERT_EQ(view.stage_replicas.size(), 1u);
  EXPECT_EQ(view.stage_replicas[0].second, std::vector<int>{1});
}

// Each device a tensor-parallel group of two, in two replicas: eight ranks,
// replica after replica and within a replica place after place. A rank's
// pipeline neighbours, tied weights and stage copies are those of its
// place; its group is the places of its device.
TEST(Plan, TensorParallelGroupsPairTheirPlaces) {
  auto grouped = [](Plan& p) {
    p.tensor_parallel = 2;
    p.devices.push_back({"cpu:2", "cpu", 0, 1});
    p.devices.push_back({"cpu:3", "cpu", 0, 1});
    p.ranks = replicated_ranks(p.stages, 2, 2, 2);
  };
  Plan plan = two_stage_plan();
  grouped(plan);
  EXPECT_EQ(plan_error(grouped), "ok");
  const RankView view = rank_view(plan, 7);  // replica 1, place 1, stage 1
  EXPECT_EQ(view.device, 3);
  EXPECT_EQ(view.shard, 1);
  EXPECT_EQ(view.neighbours, std::vector<int>{6});
  EXPECT_EQ(view.tensor_group, (std::vector<int>{5, 7}));
  EXPECT_EQ(view.replica_ranks, (std::vector<int>{4, 5, 6, 7}));
  ASSERT_EQ(view.tied.size(), 1u);
  EXPECT_EQ(view.tied[0].second, (std::vector<int>{6, 7}));
  ASSERT_EQ(view.stage_replicas.size(), 1u);
  EXPECT_EQ(view.stage_replicas[0].second, (std::vector<int>{3, 7}));
  EXPECT_EQ(rank_of_stage(plan, 0, 1, 1), 6);
  EXPECT_EQ(rank_name(plan, 7), "rank 7 (stage 1, replica 1, tensor-parallel place 1)");
  EXPECT_EQ(plan_from_json(plan_to_json(plan), "plan.json"), plan);
  EXPECT_EQ(plan_error([&](Plan& p) {
              grouped(p);
              std::swap(p.ranks[2].shard, p.ranks[0].shard);
            }),
            "plan.json: rank 0 has place 1 in its tensor-parallel group, but with 2 ranks per place it has place 0; "
            "list the ranks place after place");
}

// Two replicas of the two-stage pipeline: four ranks on four devices, replica
// after replica; each stage's copies average their gradients, and a tied
// weight is summed within a replica.
TEST(Plan, ReplicasRunThePipelineOnDevicesOfTheirOwn) {
  auto replicated = [](Plan& p) {
    p.devices.push_back({"cpu:2", "cpu", 0, 1});
    p.devices.push_back({"cpu:3", "cpu", 0, 1});
    p.ranks = replicated_ranks(p.stages, 2, 2);
  };
  Plan plan = two_stage_plan();
  replicated(plan);
  EXPECT_EQ(plan_error(replicated), "ok");
  EXPECT_EQ(replica_count(plan), 2);
  const RankView view = rank_view(plan, 3);
  EXPECT_EQ(view.device, 3);
  EXPECT_EQ(view.replica_ranks, (std::vector<int>{2, 3}));
  EXPECT_EQ(view.stages, std::vector<int>{1});
  EXPECT_EQ(view.neighbours, std::vector<int>{2});
  EXPECT_EQ(view.world, (std::vector<int>{0, 1, 2, 3}));
  ASSERT_EQ(view.tied.size(), 1u);
  EXPECT_EQ(view.tied[0].second, (std::vector<int>{2, 3}));
  ASSERT_EQ(view.stage_replicas.size(), 1u);
  EXPECT_EQ(view.stage_replicas[0].first, 1);
  EXPECT_EQ(view.stage_replicas[0].second, (std::vector<int>{1, 3}));
  EXPECT_EQ(rank_of_stage(plan, 0, 1), 2);

  EXPECT_EQ(plan_error([&](Plan& p) {
              replicated(p);
              std::swap(p.ranks[2].stages, p.ranks[3].stages);
            }),
            "plan.json: rank 2 of replica 1 runs other stages than rank 0 of replica 0");
  EXPECT_EQ(plan_error([&](Plan& p) {
              replicated(p);
              p.ranks[3].device = 1;
            }),
            "plan.json: rank 3 runs device 1, which another rank runs");

  // The replicas may share the optimizer state out; the plan says so, and
  // one replica has no one to share it with.
  Plan shared = plan;
  shared.shard_optimizer = true;
  const std::string text = plan_to_json(shared);
  EXPECT_NE(text.find("\"optimizer_state\": \"sharded\""), std::string::npos);
  EXPECT_EQ(plan_from_json(text, "plan.json"), shared);
  EXPECT_NE(plan_to_json(plan).find("\"optimizer_state\": \"replicated\""), std::string::npos);
  EXPECT_EQ(plan_error([](Plan& p) { p.shard_optimizer = true; }),
            "plan.json: the optimizer state is sharded over the data-parallel replicas, but the plan has one replica");
  EXPECT_EQ(json_error([](Json& j) { j["optimizer_state"] = "zero3"; }),
            "plan.json: optimizer_state must be \"sharded\" or \"replicated\", got \"zero3\"");
  Json old = Json::parse(text);
  old.erase("optimizer_state");  // a plan written before the field: replicated
  EXPECT_FALSE(plan_from_json(old.dump(), "plan.json").shard_optimizer);
}

TEST(Plan, SendsAreReturnedValues) {
  // Stage 0 sends its input x too: the program must return it.
  EXPECT_EQ(plan_error([](Plan& p) {
              p.stages[0].send.push_back({"x", kAct, 1});
              p.stages[1].recv.push_back({"x", kAct, 0});
            }),
            "plan.json: stage 0 sends x, but its program does not return %x");
}

TEST(JsonFormat, KeepsShortContainersOnOneLine) {
  Json j = {{"a", {1, 2}}, {"long", std::vector<std::string>(30, "abcdef")}, {"program", {"x", "y"}}};
  EXPECT_EQ(
      format_json(j, {"program"}), "{\n  \"a\": [1, 2],\n  \"long\": [\n" + [] {
        std::string s;
        for (int i = 0; i < 30; ++i) s += std::string("    \"abcdef\"") + (i < 29 ? ",\n" : "\n");
        return s;
      }() + "  ],\n  \"program\": [\n    \"x\",\n    \"y\"\n  ]\n}\n");
  EXPECT_EQ(format_json(Json::object()), "{}\n");
}

}  // namespace
}  // namespace pf
