// The embeddable runtime: training, evaluation, checkpoints that continue bit
// for bit, loads that fail whole, and failures that stop every stage in time.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "comm/local_communicator.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "plan/plan.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "runtime/checkpoint.h"
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

namespace fs = std::filesystem;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every file of a checkpoint folder, by name, in name order: equal for two
// checkpoints of the same state.
std::string folder_bytes(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& name : names) out += name + "\n" + read_bytes(dir + "/" + name);
  EXPECT_FALSE(names.empty()) << dir;
  return out;
}

// A fresh directory per test, removed afterwards.
class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("pf_runtime_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // The mlp example (I=32, H=64, L=2, K=10) with a batch of 16 in 4
  // micro-batches, compiled for two CPU devices; returns the plan's path.
  std::string compile(const std::string& schedule = "1f1b", int virtual_stages = 1, int devices = 2) {
    Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/mlp.pf"));
    DimBinding binding = m.binding({{"I", 32}, {"H", 64}, {"L", 2}, {"K", 10}, {"B", 16}});
    verify_module(m, binding, VerifyOptions{true});
    CompileOptions options;
    options.devices = fmt::format("cpu:{}", devices);
    options.microbatches = 4;
    options.schedule = schedule;
    options.virtual_stages = virtual_stages;
    CompileResult r = compile_plan(std::move(m), binding, "mlp.pf", options);
    std::string out = path(fmt::format("plan_{}_{}.json", schedule, devices));
    save_plan(r.plan, out);
    return out;
  }

  fs::path dir_;
};

// A deterministic batch for the runtime's inputs: features in [-1, 1) and
// labels in [0, 10); `bad_label` puts an out-of-range label in sample 5.
struct Batch {
  std::vector<std::vector<std::byte>> data;
  Runtime::Batch named;
};

Batch make_batch(const Runtime& rt, int seed, int32_t bad_label = -1) {
  Batch b;
  std::mt19937 rng(seed);
  for (const auto& [name, type] : rt.batch_inputs()) {
    std::vector<std::byte> bytes(static_cast<size_t>(type.bytes()));
    if (type.dtype == DType::f32) {
      auto* p = reinterpret_cast<float*>(bytes.data());
      for (int64_t i = 0; i < type.numel(); ++i) p[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
    } else {
      auto* p = reinterpret_cast<int32_t*>(bytes.data());
      for (int64_t i = 0; i < type.numel(); ++i) p[i] = static_cast<int32_t>(rng() % 10);
      if (bad_label >= 0) p[5] = bad_label;
    }
    b.data.push_back(std::move(bytes));
  }
  auto inputs = rt.batch_inputs();
  for (size_t i = 0; i < inputs.size(); ++i) b.named.inputs.emplace_back(inputs[i].first, b.data[i].data());
  return b;
}

RuntimeOptions adamw() {
  RuntimeOptions o;
  o.train.lr = 3e-3;
  o.train.weight_decay = 0.01;
  o.train.clip = 1.0;
  o.train.warmup = 2;
  o.train.steps = 6;
  o.train.cosine = true;
  return o;
}

// The runtime executes what the plan holds: each stage's program is parsed
// once, while the plan is checked, and no pass runs on it.
// A plan that models tensor parallelism is refused with one message, by
// Runtime::load and by the pipeline itself.
TEST_F(RuntimeTest, RefusesAPlanThatModelsTensorParallelism) {
  const std::string file = compile();
  Plan plan = load_plan(file);
  plan.tensor_parallel = 8;
  plan.ranks = replicated_ranks(plan.stages, static_cast<int>(plan.devices.size()), 1, 8);
  save_plan(plan, path("tp.json"));
  const std::string message =
      "this plan models tensor parallelism (T=8) without each rank's part of its stages (a plan written before they "
      "were); compile it again to run it";
  EXPECT_EQ(error_of([&] { Runtime::load(path("tp.json")); }), message);
  EXPECT_EQ(error_of([&] { Pipeline::from_plan(plan, PipelineOptions{}); }), message);
}

TEST_F(RuntimeTest, LoadingAPlanParsesEachStageProgramOnce) {
  for (const std::string schedule : {"1f1b", "zb1"}) {
    SCOPED_TRACE(schedule);
    const std::string plan = compile(schedule, 1);
    const int64_t before = modules_parsed();
    Runtime rt = Runtime::load(plan);
    EXPECT_EQ(modules_parsed() - before, rt.stages());
    EXPECT_EQ(rt.stages(), 2);
  }
}

TEST_F(RuntimeTest, DescribesThePlanAndItsBatch) {
  Runtime rt = Runtime::load(compile());
  EXPECT_EQ(rt.stages(), 2);
  EXPECT_EQ(rt.devices(), 2);
  EXPECT_EQ(rt.plan().model_name, "mlp");
  auto inputs = rt.batch_inputs();
  ASSERT_EQ(inputs.size(), 2u);
  EXPECT_EQ(inputs[0].first, "x");
  EXPECT_EQ(inputs[0].second.str(), "f32[16,32]");
  EXPECT_EQ(inputs[1].first, "labels");
  EXPECT_EQ(inputs[1].second.str(), "i32[16]");
}

TEST_F(RuntimeTest, ForwardIsTheTrainingLossWithoutAnUpdate) {
  for (auto [schedule, chunks] : {std::pair{"1f1b", 1}, {"gpipe", 1}, {"zb1", 1}, {"interleaved", 2}}) {
    SCOPED_TRACE(schedule);
    Runtime rt = Runtime::load(compile(schedule, chunks), adamw());
    rt.initialize(7);
    Batch b = make_batch(rt, 1);
    rt.save_checkpoint(path("before"));
    double evaluated = rt.forward(b.named);
    EXPECT_EQ(rt.step(), 0);
    EXPECT_EQ(rt.last_step().grad_norm, 0);
    rt.save_checkpoint(path("after"));
    EXPECT_EQ(folder_bytes(path("before")), folder_bytes(path("after")));
    // The same forward programs run in training: the same loss, bit for bit.
    EXPECT_EQ(rt.train_step(b.named), evaluated);
    EXPECT_EQ(rt.step(), 1);
    EXPECT_GT(rt.last_step().grad_norm, 0);
    EXPECT_NE(rt.forward(b.named), evaluated);
  }
}

// Each CPU device splits its kernels over the threads the plan gives it
// (cpu:2x2), and splitting changes no bit of the training.
TEST_F(RuntimeTest, DevicesRunTheirThreadsWithTheBitsOfOne) {
  auto train = [&](const std::string& devices) {
    Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/mlp.pf"));
    // Products large enough to be split over two threads.
    DimBinding binding = m.binding({{"I", 256}, {"H", 512}, {"L", 2}, {"K", 10}, {"B", 256}});
    verify_module(m, binding, VerifyOptions{true});
    CompileOptions options;
    options.devices = devices;
    options.microbatches = 2;
    Plan plan = compile_plan(std::move(m), binding, "mlp.pf", options).plan;
    Runtime rt = Runtime::from_plan(plan, devices, adamw());
    EXPECT_EQ(rt.plan().devices.back().threads, devices == "cpu:2x2" ? 2 : 1);
    rt.initialize(5);
    std::vector<double> losses;
    for (int s = 0; s < 2; ++s) losses.push_back(rt.train_step(make_batch(rt, 20 + s).named));
    rt.save_weights(path(devices + ".safetensors"));
    return losses;
  };
  EXPECT_EQ(train("cpu:2x2"), train("cpu:2"));
  EXPECT_EQ(read_bytes(path("cpu:2x2.safetensors")), read_bytes(path("cpu:2.safetensors")));
}

// What a stage holds, as the memory limit counts it: its parameters three
// or four times over (weights, gradients, one or two optimizer states) and a
// stash slot per micro-batch it may hold.
TEST_F(RuntimeTest, StagesCountWhatTheyHold) {
  const Plan plan = load_plan(compile("gpipe"));
  for (const char* optimizer : {"adamw", "sgd"}) {
    PipelineOptions options;
    options.train.optimizer = optimizer;
    auto pipeline = Pipeline::from_plan(plan, options);
    pipeline->start();
    const std::vector<StageMemory> memory = pipeline->memory();
    ASSERT_EQ(memory.size(), 2u);
    for (const StageMemory& m : memory) {
      int64_t numel = 0;
      for (const PlanParam& p : plan.stages[static_cast<size_t>(m.stage)].params) numel += p.type.numel();
      EXPECT_EQ(m.rank, m.stage);
      EXPECT_EQ(m.weights, 4 * numel);
      EXPECT_EQ(m.gradients, 4 * numel);
      EXPECT_EQ(m.optimizer_state, (optimizer == std::string("adamw") ? 8 : 4) * numel) << optimizer;
      EXPECT_EQ(m.slots, 4);  // gpipe: every micro-batch in flight
      EXPECT_GT(m.activations, 0);
      EXPECT_EQ(m.total(),
                m.weights + m.gradients + m.optimizer_state + m.activations + m.workspace + m.packed_weights);
      // Four micro-batches of four rows: products of a few rows, which read
      // their weights unpacked, but the stage does not know that ahead.
      int64_t bound = 0;
      for (const PlanParam& p : plan.stages[static_cast<size_t>(m.stage)].params)
        if (p.type.rank() == 2)
          bound += 4 * (p.type.shape[0] * ((p.type.shape[1] + 63) / 64 * 64) +
                        (p.type.shape[0] + 63) / 64 * 64 * p.type.shape[1]);
      EXPECT_EQ(m.packed_weights, bound);
    }
  }
  PipelineOptions off;
  off.pack_weights = PackWeights::off;
  auto pipeline = Pipeline::from_plan(plan, off);
  pipeline->start();
  for (const StageMemory& m : pipeline->memory()) EXPECT_EQ(m.packed_weights, 0);
}

// Weights kept packed through each step give the bits of weights packed by
// every product, step after step (each step's copies made from the weights
// the last update left) and after a checkpoint replaces them, on one kernel
// thread per device and on two.
TEST_F(RuntimeTest, PackedWeightsGiveTheBitsOfWeightsPackedEachTime) {
  Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/mlp.pf"));
  DimBinding binding = m.binding({{"I", 96}, {"H", 160}, {"L", 2}, {"K", 10}, {"B", 128}});
  verify_module(m, binding, VerifyOptions{true});
  CompileOptions compile_options;
  compile_options.devices = "cpu:2";
  compile_options.microbatches = 4;  // 32 rows each: the blocked products
  const Plan plan = compile_plan(std::move(m), binding, "mlp.pf", compile_options).plan;
  auto train = [&](PackWeights pack, int threads, const std::string& name) {
    RuntimeOptions options = adamw();
    options.pack_weights = pack;
    options.threads = threads;
    Runtime rt = Runtime::from_plan(plan, name, options);
    rt.initialize(5);
    std::vector<double> losses;
    for (int s = 0; s < 3; ++s) losses.push_back(rt.train_step(make_batch(rt, 30 + s).named));
    if (pack == PackWeights::off) {
      EXPECT_EQ(rt.packed_weight_bytes(), 0);
      for (int64_t bytes : rt.last_step().packed_weight_bytes) EXPECT_EQ(bytes, 0);
    } else {
      for (int64_t bytes : rt.last_step().packed_weight_bytes) {
        EXPECT_GT(bytes, 0) << name;
        EXPECT_LE(bytes, rt.packed_weight_bytes()) << name;
      }
    }
    rt.save_checkpoint(path(name));
    rt.initialize(6);
    rt.load_checkpoint(path(name));
    losses.push_back(rt.train_step(make_batch(rt, 40).named));
    rt.save_weights(path(name + ".safetensors"));
    return losses;
  };
  const std::vector<double> unpacked = train(PackWeights::off, 1, "off");
  for (int threads : {1, 2}) {
    const std::string name = fmt::format("on_{}", threads);
    EXPECT_EQ(train(PackWeights::on, threads, name), unpacked) << name;
    EXPECT_EQ(read_bytes(path(name + ".safetensors")), read_bytes(path("off.safetensors"))) << name;
  }
  EXPECT_EQ(train(PackWeights::automatic, 1, "auto"), unpacked);
}

TEST_F(RuntimeTest, CheckpointContinuesBitForBit) {
  std::string plan = compile();
  std::vector<Batch> batches;
  Runtime a = Runtime::load(plan, adamw());
  for (int s = 0; s < 6; ++s) batches.push_back(make_batch(a, 10 + s));
  a.initialize(3);
  for (int s = 0; s < 3; ++s) a.train_step(batches[s].named);
  a.save_checkpoint(path("ck"));
  std::vector<double> straight;
  for (int s = 3; s < 6; ++s) straight.push_back(a.train_step(batches[s].named));
  a.save_checkpoint(path("a_end"));

  // A new runtime of the same plan, on a different seed: the checkpoint
  // replaces weights, both AdamW moments, the step and the lr schedule.
  Runtime b = Runtime::load(plan, adamw());
  b.initialize(99);
  b.load_checkpoint(path("ck"));
  EXPECT_EQ(b.step(), 3);
  std::vector<double> resumed;
  for (int s = 3; s < 6; ++s) resumed.push_back(b.train_step(batches[s].named));
  b.save_checkpoint(path("b_end"));
  EXPECT_EQ(resumed, straight);
  EXPECT_EQ(folder_bytes(path("a_end")), folder_bytes(path("b_end")));

  // A checkpoint is a weights file too (fresh optimizer, step 0).
  Runtime c = Runtime::load(plan, adamw());
  c.load_weights(path("ck"));
  EXPECT_EQ(c.step(), 0);
  c.save_weights(path("c_weights"));
  b.load_checkpoint(path("ck"));
  b.save_weights(path("b_weights"));
  EXPECT_EQ(read_bytes(path("c_weights")), read_bytes(path("b_weights")));
}

// A forward pass counts a classifier's predictions from the loss stage's
// stash, over every micro-batch and schedule. Weights whose logits are the
// output bias, 1 for class 3, predict 3 for every sample: the count is that
// of the labels that are 3. A training step counts nothing.
TEST_F(RuntimeTest, ForwardCountsAClassifiersPredictions) {
  for (auto [schedule, chunks] : {std::pair{"1f1b", 1}, {"zb1", 1}, {"interleaved", 2}}) {
    SCOPED_TRACE(schedule);
    Runtime rt = Runtime::load(compile(schedule, chunks), adamw());
    std::vector<std::vector<float>> values;
    std::vector<std::pair<std::string, const float*>> in;
    for (const auto& [name, type] : rt.parameters()) {
      values.emplace_back(static_cast<size_t>(type.numel()), 0.0f);
      if (name == "fc_out.b") values.back()[3] = 1.0f;
    }
    for (size_t i = 0; i < values.size(); ++i) in.emplace_back(rt.parameters()[i].first, values[i].data());
    rt.load_parameters(in);
    Batch b = make_batch(rt, 4);
    const auto* labels = reinterpret_cast<const int32_t*>(b.data[1].data());
    ASSERT_EQ(rt.batch_inputs()[1].first, "labels");
    const int64_t threes = std::count(labels, labels + 16, 3);
    ASSERT_GT(threes, 0);
    rt.forward(b.named);
    EXPECT_EQ(rt.last_step().predicted, 16);
    EXPECT_EQ(rt.last_step().correct, threes);
    rt.train_step(b.named);
    EXPECT_EQ(rt.last_step().predicted, 0);
    EXPECT_EQ(rt.last_step().correct, 0);
  }
}

// A caller's notes (pipeforge run's place in its data set) travel in the
// checkpoint's index and come back from load_checkpoint; the index's own keys
// are refused before anything is written.
TEST_F(RuntimeTest, CheckpointNotesComeBackFromLoad) {
  const std::string plan = compile();
  Runtime a = Runtime::load(plan, adamw());
  a.initialize(3);
  a.train_step(make_batch(a, 1).named);
  a.save_checkpoint(path("ck"), {{"data.epoch", "2"}, {"data.batch", "5"}});
  Runtime b = Runtime::load(plan, adamw());
  EXPECT_EQ(b.load_checkpoint(path("ck")), (CheckpointNotes{{"data.batch", "5"}, {"data.epoch", "2"}}));
  a.save_checkpoint(path("plain"));
  EXPECT_EQ(b.load_checkpoint(path("plain")), CheckpointNotes{});
  EXPECT_EQ(error_of([&] { a.save_checkpoint(path("bad"), {{"step", "7"}}); }),
            path("bad") + ": a checkpoint note may not be called 'step': the index uses that key");
  EXPECT_FALSE(fs::exists(path("bad")));
}

// The parameters by name in memory: what save_weights writes, read without
// a file; setting them is load_weights without the file.
TEST_F(RuntimeTest, ParametersAreReadAndSetByName) {
  const std::string plan = compile();
  Runtime a = Runtime::load(plan, adamw());
  a.initialize(5);
  Batch b = make_batch(a, 1);
  a.train_step(b.named);
  a.save_weights(path("a.safetensors"));
  const SafeTensors file = SafeTensors::read(path("a.safetensors"));
  const std::vector<std::pair<std::string, TensorType>> params = a.parameters();
  ASSERT_EQ(params.size(), file.size());
  std::vector<std::vector<float>> values;
  std::vector<std::pair<std::string, float*>> out;
  for (const auto& [name, type] : params) values.emplace_back(static_cast<size_t>(type.numel()));
  for (size_t i = 0; i < params.size(); ++i) out.emplace_back(params[i].first, values[i].data());
  a.read_parameters(out);
  for (size_t i = 0; i < params.size(); ++i) {
    const TensorData& t = file.at(params[i].first);
    EXPECT_EQ(params[i].second, t.type) << params[i].first;
    EXPECT_EQ(std::memcmp(values[i].data(), t.bytes.data(), t.bytes.size()), 0) << params[i].first;
  }
  // On CPU stages, the same values where they lie, and a step changes them there.
  const std::vector<std::pair<std::string, const float*>> held = a.host_parameters();
  ASSERT_EQ(held.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(held[i].first, params[i].first);
    EXPECT_EQ(std::memcmp(held[i].second, values[i].data(), values[i].size() * sizeof(float)), 0) << held[i].first;
  }
  a.train_step(b.named);
  EXPECT_NE(std::memcmp(held[0].second, values[0].data(), values[0].size() * sizeof(float)), 0);

  // Set on a runtime elsewhere in its training: it then trains as one that
  // loaded the weights file does, bit for bit.
  std::vector<std::pair<std::string, const float*>> in;
  for (size_t i = 0; i < params.size(); ++i) in.emplace_back(params[i].first, values[i].data());
  Runtime c = Runtime::load(plan, adamw());
  c.initialize(9);
  c.train_step(b.named);
  c.load_parameters(in);
  EXPECT_EQ(c.step(), 0);
  Runtime d = Runtime::load(plan, adamw());
  d.load_weights(path("a.safetensors"));
  EXPECT_EQ(c.train_step(b.named), d.train_step(b.named));
  c.save_weights(path("c.safetensors"));
  d.save_weights(path("d.safetensors"));
  EXPECT_EQ(read_bytes(path("c.safetensors")), read_bytes(path("d.safetensors")));

  // Every problem at once, before anything changes.
  float x = 0;
  EXPECT_EQ(error_of([&] { a.read_parameters({{params[0].first, &x}, {"nope", &x}}); }),
            "read_parameters: @mlp has no parameter 'nope'");
  std::vector<std::pair<std::string, const float*>> bad(in.begin(), in.end() - 1);
  bad.emplace_back("nope", &x);
  bad.push_back(in[0]);
  EXPECT_EQ(error_of([&] { c.load_parameters(bad); }),
            fmt::format("load_parameters: '{}' given twice; missing '{}' ({}); @mlp has no parameter 'nope'",
                        in[0].first, params.back().first, params.back().second.str()));
  EXPECT_EQ(c.step(), 1);
  c.save_weights(path("c2.safetensors"));
  EXPECT_EQ(read_bytes(path("c.safetensors")), read_bytes(path("c2.safetensors")));
}

// A checkpoint is a shard per stage found by name: a plan of the same model
// cut into three stages instead of two takes up the weights, the AdamW
// moments and the step, and trains on as the two-stage runtime does (to
// rounding: the stages sum their gradients in other orders).
// Each rank a runtime of its own, as processes run a plan: every call is
// collective, and together they write what one runtime of all the ranks
// writes, byte for byte (checkpoint shards by their owners, the index, the
// gradients and the weights gathered to rank 0).
TEST_F(RuntimeTest, RanksOfTheirOwnWriteWhatOneRuntimeWrites) {
  const std::string plan = compile("1f1b", 1, 3);
  Runtime whole = Runtime::load(plan, adamw());
  whole.initialize(5);
  for (int step = 0; step < 2; ++step) whole.train_step(make_batch(whole, step).named);
  whole.save_checkpoint(path("whole"));
  whole.save_gradients(path("whole_grads.safetensors"));
  whole.save_weights(path("whole_weights.safetensors"));

  LocalWorld world(3, 20);
  std::vector<std::unique_ptr<Runtime>> ranks;
  for (int r = 0; r < 3; ++r) {
    RuntimeOptions options = adamw();
    options.rank = r;
    options.comm = &world.rank(r);
    ranks.push_back(std::make_unique<Runtime>(Runtime::load(plan, options)));
  }
  // One phase: every rank's call on a thread of its own.
  auto on_ranks = [&](const std::function<void(Runtime&)>& call) {
    world.start_step();
    std::vector<std::thread> threads;
    std::vector<std::string> errors(3);
    for (int r = 0; r < 3; ++r)
      threads.emplace_back([&, r] {
        try {
          call(*ranks[static_cast<size_t>(r)]);
        } catch (const Error& e) {
          errors[static_cast<size_t>(r)] = e.message();
        }
        world.finish(r);
      });
    EXPECT_TRUE(world.watch().empty());
    for (auto& t : threads) t.join();
    for (const std::string& e : errors) EXPECT_EQ(e, "");
  };
  on_ranks([](Runtime& rt) { rt.initialize(5); });
  for (int step = 0; step < 2; ++step)
    on_ranks([&](Runtime& rt) { rt.train_step(make_batch(rt, step).named); });
  EXPECT_EQ(ranks[2]->last_step().loss, whole.last_step().loss);
  EXPECT_EQ(ranks[1]->last_step().grad_norm, whole.last_step().grad_norm);
  EXPECT_EQ(ranks[0]->last_step().peak_stash_bytes, whole.last_step().peak_stash_bytes);
  on_ranks([&](Runtime& rt) {
    rt.save_checkpoint(path("split"));
    rt.save_gradients(path("split_grads.safetensors"));
    rt.save_weights(path("split_weights.safetensors"));
  });
  EXPECT_EQ(folder_bytes(path("split")), folder_bytes(path("whole")));
  EXPECT_EQ(read_bytes(path("split_grads.safetensors")), read_bytes(path("whole_grads.safetensors")));
  EXPECT_EQ(read_bytes(path("split_weights.safetensors")), read_bytes(path("whole_weights.safetensors")));

  // And each resumes from it as one runtime does.
  on_ranks([&](Runtime& rt) { rt.load_checkpoint(path("whole")); });
  on_ranks([&](Runtime& rt) { rt.train_step(make_batch(rt, 2).named); });
  whole.train_step(make_batch(whole, 2).named);
  EXPECT_EQ(ranks[0]->last_step().loss, whole.last_step().loss);
}

TEST_F(RuntimeTest, ACheckpointLoadsIntoAPlanWithOtherStages) {
  std::vector<Batch> batches;
  Runtime two = Runtime::load(compile("1f1b", 1, 2), adamw());
  for (int s = 0; s < 5; ++s) batches.push_back(make_batch(two, 20 + s));
  two.initialize(4);
  for (int s = 0; s < 3; ++s) two.train_step(batches[s].named);
  two.save_checkpoint(path("ck"));
  EXPECT_EQ(std::distance(fs::directory_iterator(path("ck")), fs::directory_iterator()), 3);  // 2 shards, the index

  Runtime three = Runtime::load(compile("1f1b", 1, 3), adamw());
  ASSERT_EQ(three.stages(), 3);
  three.load_checkpoint(path("ck"));
  EXPECT_EQ(three.step(), 3);
  two.save_weights(path("two.safetensors"));
  three.save_weights(path("three.safetensors"));
  EXPECT_EQ(read_bytes(path("two.safetensors")), read_bytes(path("three.safetensors")));
  for (int s = 3; s < 5; ++s) {
    const double a = two.train_step(batches[s].named), b = three.train_step(batches[s].named);
    EXPECT_NEAR(b, a, 1e-5 * std::fabs(a)) << "step " << s;
  }
  // Fresh moments instead of the checkpoint's would move the weights otherwise.
  Runtime fresh = Runtime::load(compile("1f1b", 1, 3), adamw());
  fresh.load_weights(path("ck"));
  fresh.train_step(batches[3].named);
  EXPECT_GT(std::fabs(fresh.train_step(batches[4].named) - two.last_step().loss), 1e-4);
}

TEST_F(RuntimeTest, BadCheckpointsChangeNothing) {
  std::string plan = compile();
  Runtime rt = Runtime::load(plan, adamw());
  rt.initialize(5);
  Batch b = make_batch(rt, 2);
  rt.train_step(b.named);
  rt.save_checkpoint(path("good"));
  SafeTensors good = read_checkpoint(path("good"));

  // The good checkpoint's tensors in one shard, edited.
  auto edited = [&](const std::string& name, const std::function<void(SafeTensors&)>& edit) {
    SafeTensors out;
    for (const std::string& t : good.names()) {
      if (t == "fc_in.b") continue;  // re-added below unless the edit drops it
      out.add(t, good.at(t).type, good.at(t).bytes.data());
    }
    out.metadata = good.metadata;
    edit(out);
    const CheckpointMeta meta = out.metadata;
    out.metadata.clear();
    write_checkpoint(path(name), meta, {out});
    return path(name);
  };
  const TensorData& bias = good.at("fc_in.b");
  auto keep_bias = [&](SafeTensors& f) { f.add("fc_in.b", bias.type, bias.bytes.data()); };

  std::string missing = edited("missing", [](SafeTensors&) {});
  std::string misshaped = edited("misshaped", [&](SafeTensors& f) {
    std::vector<float> longer(65, 0.0f);
    f.add("fc_in.b", TensorType{DType::f32, {65}}, longer.data());
  });
  std::string sgd = edited("sgd", [&](SafeTensors& f) {
    keep_bias(f);
    f.metadata["optimizer"] = "sgd";
  });
  std::string other_model = edited("other_model", [&](SafeTensors& f) {
    keep_bias(f);
    f.metadata["model"] = "gpt";
  });
  std::string weights_only = path("weights_only");
  rt.save_weights(weights_only);
  // A shard cut short, as a crash of a writer that does not rename could leave it.
  std::string truncated = path("truncated");
  fs::copy(path("good"), truncated);
  for (const auto& e : fs::directory_iterator(truncated))
    if (e.path().extension() == ".safetensors") fs::resize_file(e.path(), fs::file_size(e.path()) - 100);

  // A shard whole in size but with one byte of a tensor flipped (a disk, or
  // a hand, changed it): its checksum, the hash in its name, catches it.
  std::string flipped = path("flipped");
  fs::copy(path("good"), flipped);
  std::string flipped_shard;
  for (const auto& e : fs::directory_iterator(flipped))
    if (e.path().extension() == ".safetensors" && flipped_shard.empty()) {
      flipped_shard = e.path().filename().string();
      std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(-1, std::ios::end);
      const char last = static_cast<char>(f.get());
      f.seekp(-1, std::ios::end);
      f.put(static_cast<char>(last ^ 0x10));
    }

  // Move the runtime on, so that a load that changed anything would show.
  rt.train_step(b.named);
  rt.save_checkpoint(path("state"));
  std::string state = folder_bytes(path("state"));

  EXPECT_EQ(error_of([&] { rt.load_checkpoint(missing); }), missing + ": missing fc_in.b");
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(misshaped); }),
            misshaped + ": fc_in.b is f32[65] here but the model expects f32[64]");
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(sgd); }),
            sgd + ": the checkpoint holds sgd state but this run trains with adamw");
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(other_model); }), other_model + ": a checkpoint of @gpt, not of @mlp");
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(weights_only); }),
            weights_only +
                ": not a pipeforge checkpoint (a folder with an index.json); a weights file loads with --init-from "
                "(load_weights)");
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(flipped); }),
            flipped + ": shard " + flipped_shard +
                " does not match its checksum (the file was changed or damaged after it was written); load an older "
                "checkpoint");
  std::string corrupt = error_of([&] { rt.load_checkpoint(truncated); });
  EXPECT_EQ(corrupt.rfind(truncated + "/stage-", 0), 0u) << corrupt;
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(path("absent")); }),
            "cannot open '" + path("absent") + "': no such checkpoint folder");
  std::string not_format = edited("not_format", [&](SafeTensors& f) {
    keep_bias(f);
    f.metadata["format"] = "other";
  });
  EXPECT_EQ(error_of([&] { rt.load_checkpoint(not_format); }),
            not_format + ": not a pipeforge checkpoint (its metadata has no format \"pipeforge-checkpoint\"); a "
                         "weights file loads with --init-from (load_weights)");
  // A weights file missing a parameter changes nothing either.
  EXPECT_EQ(error_of([&] { rt.load_weights(missing); }), missing + ": missing fc_in.b");

  EXPECT_EQ(rt.step(), 2);
  rt.save_checkpoint(path("state_after"));
  EXPECT_EQ(folder_bytes(path("state_after")), state);

  // An sgd runtime reads none of the adamw state, and says why.
  RuntimeOptions plain;
  plain.train.optimizer = "sgd";
  Runtime other = Runtime::load(plan, plain);
  EXPECT_EQ(error_of([&] { other.load_checkpoint(path("good")); }),
            path("good") + ": the checkpoint holds adamw state but this run trains with sgd");
}

TEST_F(RuntimeTest, RejectsBadBatchesAndOptions) {
  std::string plan = compile();
  Runtime rt = Runtime::load(plan);
  Batch b = make_batch(rt, 1);
  EXPECT_EQ(error_of([&] { rt.train_step(b.named); }),
            "the runtime has no weights yet: call initialize(), load_weights() or load_checkpoint() first");
  rt.initialize();
  Runtime::Batch half{{b.named.inputs[0]}};
  EXPECT_EQ(error_of([&] { rt.train_step(half); }), "batch: missing input 'labels' (i32[16])");
  Runtime::Batch extra = b.named;
  extra.inputs.emplace_back("y", b.data[0].data());
  EXPECT_EQ(error_of([&] { rt.forward(extra); }), "batch: unknown input 'y'; @mlp takes x, labels");
  Runtime::Batch twice = b.named;
  twice.inputs.push_back(b.named.inputs[0]);
  EXPECT_EQ(error_of([&] { rt.forward(twice); }), "batch: input 'x' is given twice");
  EXPECT_EQ(rt.step(), 0);

  RuntimeOptions bad;
  bad.train.optimizer = "lion";
  EXPECT_EQ(error_of([&] { Runtime::load(plan, bad); }), "runtime options: unknown optimizer 'lion'; use sgd or adamw");
  bad = {};
  bad.timeout_s = 0;
  EXPECT_EQ(error_of([&] { Runtime::load(plan, bad); }), "runtime options: timeout_s must be positive, not 0");
  bad = {};
  bad.train.warmup = 3;
  EXPECT_EQ(error_of([&] { Runtime::load(plan, bad); }), "runtime options: warmup must be in [0, steps = 1], not 3");
  bad = {};
  bad.threads = -1;
  EXPECT_EQ(error_of([&] { Runtime::load(plan, bad); }),
            "runtime options: threads must be 0 (each device's own) or positive, not -1");
}

// A stage that throws stops the step with its message; the runtime is as
// before, and trains on as if the bad batch had never come.
TEST_F(RuntimeTest, FailingStageLeavesTheRuntimeUnchanged) {
  std::string plan = compile();
  Runtime rt = Runtime::load(plan, adamw());
  Runtime twin = Runtime::load(plan, adamw());
  rt.initialize(4);
  twin.initialize(4);
  Batch good = make_batch(rt, 8);
  Batch bad = make_batch(rt, 8, /*bad_label=*/12);
  rt.train_step(good.named);
  twin.train_step(good.named);
  const std::string message =
      "stage 1: running %loss = cross_entropy %logits, %labels layer=\"fc_out\" : f32[]: cross_entropy: target 12 at "
      "position 1 is out of range [0, 10)";
  EXPECT_EQ(error_of([&] { rt.train_step(bad.named); }), message);
  EXPECT_EQ(error_of([&] { rt.forward(bad.named); }), message);
  EXPECT_EQ(rt.step(), 1);
  EXPECT_EQ(rt.train_step(good.named), twin.train_step(good.named));
  rt.save_checkpoint(path("rt"));
  twin.save_checkpoint(path("twin"));
  EXPECT_EQ(folder_bytes(path("rt")), folder_bytes(path("twin")));
}

// The Pipeline under fault injection: a stage that throws, and a send that
// never comes, which only the watchdog can end.
TEST_F(RuntimeTest, InjectedFaultsStopEveryStage) {
  Plan plan = load_plan(compile());
  Runtime shapes = Runtime::load(path("plan_1f1b_2.json"));
  Batch b = make_batch(shapes, 1);
  using Kind = PipelineOptions::Fault::Kind;

  PipelineOptions options;
  options.fault = {Kind::throw_error, 0, 2};
  auto throwing = Pipeline::from_plan(plan, options);
  throwing->initialize(1);
  throwing->start();
  EXPECT_EQ(error_of([&] { throwing->train_step(b.named.inputs); }), "stage 0: injected fault");
  EXPECT_EQ(error_of([&] { throwing->forward(b.named.inputs); }), "stage 0: injected fault");

  options.fault = {Kind::drop_send, 0, 1};
  options.timeout_s = 0.5;
  auto silent = Pipeline::from_plan(plan, options);
  silent->initialize(1);
  silent->start();
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto t0 = std::chrono::steady_clock::now();
    // Both stages wait on each other by then; the message names both.
    EXPECT_EQ(error_of([&] { silent->train_step(b.named.inputs); }),
              "watchdog: no hand-off for 0.5 s: stage 0 waits for the gradients of micro-batch 1 from stage 1; "
              "stage 1 waits for the activations of micro-batch 1 from stage 0");
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(seconds, 0.5);
    EXPECT_LT(seconds, 2.0);
  }
}

// A stage whose computation never returns (a hung kernel, deaf to the failure
// flag): the watchdog fails the step naming it, gives the thread up after a
// grace period instead of hanging in join, and retires the pipeline.
TEST_F(RuntimeTest, AStageStuckInAComputationIsGivenUp) {
  Plan plan = load_plan(compile());
  Runtime shapes = Runtime::load(path("plan_1f1b_2.json"));
  Batch b = make_batch(shapes, 1);
  PipelineOptions options;
  options.fault = {PipelineOptions::Fault::Kind::stall, 1, 0};
  options.timeout_s = 0.5;
  auto stuck = Pipeline::from_plan(plan, options);
  stuck->initialize(1);
  stuck->start();
  auto t0 = std::chrono::steady_clock::now();
  const std::string why = "watchdog: stage 1 has spent more than 0.5 s in the forward of micro-batch 0 and does not return";
  EXPECT_EQ(error_of([&] { stuck->train_step(b.named.inputs); }), why);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(seconds, 1.0);  // the limit, then the grace period
  EXPECT_LT(seconds, 1.9);  // before the stalled forward (2 s) returns
  EXPECT_EQ(error_of([&] { stuck->train_step(b.named.inputs); }), "this pipeline cannot run again: " + why);
  stuck.reset();  // leaves the stages to the still-running worker
  // The worker finishes its stall and returns without touching freed memory
  // (ASan and the next tests would notice).
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
}

}  // namespace
}  // namespace pf
