// Pipelined training computes the numbers of one device: every schedule,
// stage count and micro-batch count, over several steps; and each stage keeps
// as many micro-batches in flight as its schedule's theory says.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "comm/local_communicator.h"
#include "plan/plan.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "runtime/schedule_warmup.h"
#include "tests/runtime/pipeline_equivalence.h"

namespace pf {
namespace {

using namespace equivalence;

class Equivalence : public testing::TestWithParam<const Model*> {};

TEST_P(Equivalence, EveryScheduleMatchesOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved, ScheduleKind::zb_v, ScheduleKind::zb_interleaved,
                            ScheduleKind::dual_pipe_v, ScheduleKind::looped_bfs})
    for (int devices : {1, 2, 3, 4})
      for (int micro : {1, 2, 3, 4, 8})
        for (int virt : {1, 2}) {
          const bool any_chunks = kind == ScheduleKind::interleaved || kind == ScheduleKind::looped_bfs;
          if (!any_chunks && virt != chunks_per_device(kind, 1)) continue;
          if (kind == ScheduleKind::dual_pipe_v && micro < 2 * devices) continue;  // it takes 2p or more
          expect_same(ref, model, kind, devices, micro, virt);
        }
}

// Lists written by hand run as the generated ones do: each generated
// schedule written out and read back, and orders no generator makes (device
// 0 deferring its weight gradients and device 1 running each right after
// its B, where zb1 does the opposite; a V whose device 1 runs both chunks'
// forwards first; a wave, placed by its file).
TEST_P(Equivalence, WrittenSchedulesMatchOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::interleaved,
                            ScheduleKind::zb_h1, ScheduleKind::zb_v, ScheduleKind::zb_interleaved,
                            ScheduleKind::dual_pipe_v, ScheduleKind::looped_bfs}) {
    const bool any_chunks = kind == ScheduleKind::interleaved || kind == ScheduleKind::looped_bfs;
    const int virt = chunks_per_device(kind, any_chunks ? 2 : 1);
    Placement written;
    written.schedule_actions = write_schedule_text(make_schedule(kind, 2, 4, virt));
    expect_same(ref, model, kind, 2, 4, virt, written);
  }
  Placement deferred;
  deferred.schedule_actions =
      "dev 0: F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3\n"
      "dev 1: F0 B0 W0 F1 B1 W1 F2 B2 W2 F3 B3 W3\n";
  expect_same(ref, model, ScheduleKind::zb_h1, 2, 4, 1, deferred);
  Placement v;
  v.schedule_actions =
      "placement v\n"
      "dev 0: F0c0 F1c0 F0c1 B0c1 W0c1 F1c1 B1c1 W1c1 B0c0 W0c0 B1c0 W1c0\n"
      "dev 1: F0c0 F1c0 F0c1 F1c1 B0c1 W0c1 B0c0 W0c0 B1c1 W1c1 B1c0 W1c0\n";
  expect_same(ref, model, ScheduleKind::zb_v, 2, 2, 2, v);
  Placement wave;  // four chunks a device, down, up, down and up again
  wave.schedule_actions =
      "placement 0 1 1 0 0 1 1 0\n"
      "dev 0: F0 F1 F0c1 F1c1 F0c2 F1c2 F0c3 F1c3 B0c3 W0c3 B1c3 W1c3 B0c2 W0c2 B1c2 W1c2 B0c1 B1c1 W0c1 W1c1 "
      "B0 B1 W0 W1\n"
      "dev 1: F0 F1 F0c1 F1c1 F0c2 F1c2 F0c3 F1c3 B0c3 B1c3 W0c3 W1c3 B0c2 B1c2 B0c1 B1c1 B0 B1 W0c2 W1c2 W0c1 "
      "W1c1 W0 W1\n";
  expect_same(ref, model, ScheduleKind::zb_h1, 2, 2, 4, wave);
  Placement eager;  // 1F1B with two more forwards ahead on device 0
  eager.schedule_actions = write_schedule_text(with_extra_warmup(make_schedule(ScheduleKind::one_f_one_b, 2, 4), 2));
  expect_same(ref, model, ScheduleKind::one_f_one_b, 2, 4, 1, eager);
  Placement eager_zb1;  // ZB-H1 with one more forward ahead on device 0
  eager_zb1.schedule_actions = write_schedule_text(with_extra_warmup(make_schedule(ScheduleKind::zb_h1, 2, 4), 1));
  expect_same(ref, model, ScheduleKind::zb_h1, 2, 4, 1, eager_zb1);
}

/// Each count of `replicas` of the pipeline as `base` places them, under
/// every schedule, on 1 and 2 devices, with 1 and 4 micro-batches.
void expect_replicas_match(const Reference& ref, const Model& model, const Placement& base,
                           std::initializer_list<int> replicas_counts = {2, 3}) {
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved, ScheduleKind::zb_v, ScheduleKind::zb_interleaved})
    for (int replicas : replicas_counts)
      for (int devices : {1, 2})
        for (int micro : {1, 4}) {
          const int virt = chunks_per_device(kind, kind == ScheduleKind::interleaved ? 2 : 1);
          Placement setup = base;
          setup.replicas = replicas;
          expect_same(ref, model, kind, devices, micro, virt, setup);
        }
}

// Replicas of the pipeline, each on 1/d of the batch, averaging their
// gradients: still the numbers of one device, for every schedule.
TEST_P(Equivalence, DataParallelReplicasMatchOneDevice) {
  const Model& model = *GetParam();
  expect_replicas_match(single_device(model), model, {});
}

// Each device a tensor-parallel group of two ranks, each running its part
// of the device's stages (its blocks of the split weights, summing partial
// products with the other): the numbers of one device, for every schedule,
// alone, with data-parallel replicas and with recomputation.
TEST_P(Equivalence, TensorParallelGroupsMatchOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved, ScheduleKind::zb_v, ScheduleKind::zb_interleaved})
    for (int replicas : {1, 2})
      for (int devices : {1, 2})
        for (int micro : {1, 4}) {
          const int virt = chunks_per_device(kind, kind == ScheduleKind::interleaved ? 2 : 1);
          Placement setup;
          setup.replicas = replicas;
          setup.tensor = 2;
          expect_same(ref, model, kind, devices, micro, virt, setup);
        }
  // With layers computed again in the backward (the row-parallel sums too).
  for (Recompute recompute : {Recompute::layers, Recompute::selective})
    for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1}) {
      Placement setup;
      setup.tensor = 2;
      setup.recompute = recompute;
      expect_same(ref, model, kind, 2, 4, 1, setup);
    }
  // With the ops between the split products on each rank's part of the tokens.
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved, ScheduleKind::zb_v, ScheduleKind::zb_interleaved}) {
    Placement setup;
    setup.tensor = 2;
    setup.sequence = true;
    setup.replicas = kind == ScheduleKind::one_f_one_b ? 2 : 1;
    expect_same(ref, model, kind, 2, 4, chunks_per_device(kind, kind == ScheduleKind::interleaved ? 2 : 1), setup);
  }
  // Something was split (the tables' model has no product to split).
  if (model.file == kTables.file) return;
  int pieces = 0, experts = 0;
  Placement setup;
  setup.tensor = 2;
  for (const PlanStage& s : make_plan(model, ScheduleKind::one_f_one_b, 2, 4, 1, setup).stages)
    for (const PlanShard& part : s.shards)
      for (const PlanParam& p : part.params) {
        pieces += p.piece ? 1 : 0;
        experts += p.piece && p.piece->whole.find(".experts.") != std::string::npos;
      }
  EXPECT_GT(pieces, 0);
  // A mixture of experts is cut by experts: each rank holds a block of them.
  if (model.file == kMoe.file) {
    EXPECT_GT(experts, 0);
  }
}

// The replicas share each stage's optimizer state out, each stepping its
// share and handing it to the others: the same numbers as one device, and
// each replica holds its share of the state only (every replica of a stage
// together: one copy's worth).
TEST_P(Equivalence, ShardedOptimizerMatchesOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1, ScheduleKind::interleaved,
                            ScheduleKind::zb_v, ScheduleKind::zb_interleaved})
    for (int replicas : {2, 3})
      for (int devices : {1, 2}) {
        const int virt = chunks_per_device(kind, kind == ScheduleKind::interleaved ? 2 : 1);
        Placement setup;
        setup.replicas = replicas;
        setup.shard_optimizer = true;
        expect_same(ref, model, kind, devices, 4, virt, setup);
        const int64_t param_bytes = [&] {
          int64_t total = 0;
          for (const PlanStage& s : make_plan(model, kind, devices, 4, virt, setup).stages)
            for (const PlanParam& p : s.params) total += p.type.bytes();
          return total;
        }();
        const std::unique_ptr<Pipeline> pipeline = make_pipeline(model, kind, devices, 4, virt, setup);
        ASSERT_TRUE(pipeline->optimizer_sharded());
        int64_t state = 0, largest_share = 0;
        for (const StageMemory& m : pipeline->memory()) {
          state += m.optimizer_state;
          largest_share = std::max(largest_share, m.optimizer_state);
        }
        EXPECT_EQ(state, param_bytes) << "momentum: one copy of every stage's parameters in all";
        EXPECT_LT(largest_share, param_bytes / replicas + 64 * devices * virt)
            << "no replica holds more than its share";
      }
  // Each place of the tensor-parallel groups shares its own parameters' state
  // (its blocks and the whole ones) over its replicas.
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1})
    for (int devices : {1, 2}) {
      Placement setup;
      setup.replicas = 2;
      setup.tensor = 2;
      setup.shard_optimizer = true;
      expect_same(ref, model, kind, devices, 4, 1, setup);
    }
}

// Layers computed again in the backward instead of stashed, whole or
// between their products: the same numbers, for every schedule (zb1's weight
// part reads what its input part recomputed); each stage keeps no more
// than before, and less where there is something to recompute.
TEST_P(Equivalence, RecomputingLayersMatchesOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (Recompute recompute : {Recompute::layers, Recompute::selective}) {
    Placement setup;
    setup.recompute = recompute;
    for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                              ScheduleKind::interleaved, ScheduleKind::zb_v, ScheduleKind::zb_interleaved})
      for (int devices : {1, 2, 3})
        for (int micro : {1, 4}) {
          const int virt = chunks_per_device(kind, kind == ScheduleKind::interleaved ? 2 : 1);
          expect_same(ref, model, kind, devices, micro, virt, setup);
          const Plan kept = make_plan(model, kind, devices, micro, virt);
          const Plan recomputed = make_plan(model, kind, devices, micro, virt, setup);
          const std::string where =
              fmt::format("{} {} p={}", recompute_name(recompute), schedule_kind_name(kind), devices);
          size_t kept_values = 0, stashed = 0, computed_again = 0;
          for (size_t s = 0; s < kept.stages.size(); ++s) {
            const GradientProgram& k = *kept.stages[s].gradients;
            const GradientProgram& r = *recomputed.stages[s].gradients;
            EXPECT_LE(r.stash.size(), k.stash.size()) << where << " stage " << s;
            kept_values += k.stash.size();
            stashed += r.stash.size();
            computed_again += r.recomputed.size();
          }
          // Every model has layers to recompute whole; the GPT has norms and
          // activations between its products (the MLP's ReLUs are kept whole).
          if (recompute == Recompute::layers || &model == &kGpt) {
            EXPECT_LT(stashed, kept_values) << where;
            EXPECT_GT(computed_again, 0u) << where;
          }
        }
  }
}

// Each rank a pipeline of its own, as a process would hold it: only its
// stages, receiving its neighbours' hand-offs into buffers of its own, over
// its end of a communicator. Together they compute one device's numbers.
TEST_P(Equivalence, RanksHoldingOnlyTheirOwnStagesMatchOneDevice) {
  const Model& model = *GetParam();
  const Reference whole = single_device(model);
  struct Config {
    ScheduleKind kind;
    int devices, micro, virt, replicas;
  };
  for (const Config& c : {Config{ScheduleKind::one_f_one_b, 3, 4, 1, 1}, Config{ScheduleKind::zb_h1, 2, 4, 1, 2},
                          Config{ScheduleKind::interleaved, 2, 4, 2, 1}, Config{ScheduleKind::gpipe, 1, 2, 1, 3},
                          Config{ScheduleKind::zb_v, 2, 4, 2, 1}, Config{ScheduleKind::zb_interleaved, 2, 4, 2, 2}}) {
    SCOPED_TRACE(fmt::format("{} p={} m={} v={} d={}", schedule_kind_name(c.kind), c.devices, c.micro, c.virt,
                             c.replicas));
    const Reference ref = model.couples_samples ? one_device_accumulating(model, c.micro * c.replicas) : whole;
    Placement setup;
    setup.replicas = c.replicas;
    setup.shard_optimizer = c.replicas > 1;  // each rank steps its share, then the ranks trade them
    const Plan plan = make_plan(model, c.kind, c.devices, c.micro, c.virt, setup);
    const int ranks = static_cast<int>(plan.ranks.size());
    LocalWorld world(ranks, 20);
    std::vector<std::unique_ptr<Pipeline>> pipelines;
    for (int r = 0; r < ranks; ++r) {
      PipelineOptions options;
      options.train = sgd();
      options.ranks = {r};
      options.comm = &world.rank(r);
      pipelines.push_back(Pipeline::from_plan(plan, options));
      pipelines.back()->initialize(7);
      pipelines.back()->start();
    }
    Module full = load(model);
    verify_module(full, bind(full, model, kBatch));
    for (int step = 0; step < kSteps; ++step) {
      Batch batch = make_batch(full.graph(), step);
      std::vector<double> losses(static_cast<size_t>(ranks), -1);
      std::vector<std::string> errors(static_cast<size_t>(ranks));
      world.start_step();
      std::vector<std::thread> threads;
      for (int r = 0; r < ranks; ++r)
        threads.emplace_back([&, r] {
          try {
            losses[static_cast<size_t>(r)] = pipelines[static_cast<size_t>(r)]->train_step(batch.named).loss;
          } catch (const Error& e) {
            errors[static_cast<size_t>(r)] = e.message();
          }
          world.finish(r);
        });
      EXPECT_TRUE(world.watch().empty());
      for (auto& t : threads) t.join();
      for (int r = 0; r < ranks; ++r) {
        ASSERT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
        EXPECT_NEAR(losses[static_cast<size_t>(r)], ref.losses[static_cast<size_t>(step)],
                    1e-5 * std::fabs(ref.losses[static_cast<size_t>(step)]))
            << "rank " << r << ", step " << step;
      }
      if (step == 0)
        for (auto& p : pipelines) expect_tensors(*p, ref.first_grads, true, 1e-5, "gradient of");
    }
    for (auto& p : pipelines) expect_tensors(*p, ref.weights, false, 1e-5, "final weight");
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Equivalence, testing::Values(&kMlp, &kGpt, &kLlama, &kMoe, &kTables),
                         [](const testing::TestParamInfo<const Model*>& p) {
                           return std::string(p.param == &kMlp    ? "mlp"
                                             : p.param == &kGpt   ? "gpt"
                                             : p.param == &kLlama ? "llama"
                                             : p.param == &kMoe   ? "moe"
                                                                  : "tables");
                         });

// Replicas sharing the experts out (4 over 2 replicas, over 3 as 1, 1 and
// 2), each taking every replica's tokens for its experts and keeping their
// gradients its own, and groups of replicas doing so, the replicas holding
// the same block summing its gradients: the numbers of one device, for
// every schedule.
TEST(MixtureOfExperts, ReplicasSharingTheExpertsMatchOneDevice) {
  const Reference ref = single_device(kMoe);
  for (int group : {2, 3}) {
    Placement sharing;
    sharing.experts = group;
    expect_replicas_match(ref, kMoe, sharing, {group});
  }
  // With layers computed again in the backward: the gathers again too.
  for (Recompute recompute : {Recompute::layers, Recompute::selective})
    for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1}) {
      Placement again;
      again.replicas = 2;
      again.experts = 2;
      again.recompute = recompute;
      expect_same(ref, kMoe, kind, 2, 4, 1, again);
    }
  // Two groups of two: replicas 0 and 2 hold the first block, 1 and 3 the
  // second, and sum its gradients.
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_v}) {
    Placement groups;
    groups.replicas = 4;
    groups.experts = 2;
    expect_same(ref, kMoe, kind, 1, 2, chunks_per_device(kind, 1), groups);
  }
  // Each replica's part holds a block of every layer's three expert weights.
  Placement setup;
  setup.replicas = 3;
  setup.experts = 3;
  const Plan plan = make_plan(kMoe, ScheduleKind::one_f_one_b, 2, 4, 1, setup);
  EXPECT_EQ(plan.expert_parallel, 3);
  for (int replica = 0; replica < 3; ++replica) {
    size_t blocks = 0;
    for (const PlanStage& s : plan.stages) blocks += replica_own_params(plan, s, replica).size();
    EXPECT_EQ(blocks, 6u * 3) << "replica " << replica;
  }
}

// The replicas sharing the experts and the optimizer state out: the state of
// the parameters every replica holds cut over all of them, a block of the
// experts' over the replicas holding it. The numbers of one device, and all
// the replicas together hold one copy's worth of state.
TEST(MixtureOfExperts, ReplicasSharingTheExpertsAndTheOptimizerMatchOneDevice) {
  const Reference ref = single_device(kMoe);
  const int64_t param_bytes = [] {
    int64_t total = 0;
    for (const PlanStage& s : make_plan(kMoe, ScheduleKind::one_f_one_b, 1, 4, 1, Placement{}).stages)
      for (const PlanParam& p : s.params) total += p.type.bytes();
    return total;
  }();
  struct Case {
    int replicas, experts, devices;
    ScheduleKind kind;
  };
  for (const Case& c : {Case{2, 2, 2, ScheduleKind::one_f_one_b}, Case{2, 2, 1, ScheduleKind::zb_h1},
                        Case{4, 2, 1, ScheduleKind::one_f_one_b}, Case{3, 3, 2, ScheduleKind::zb_h1}}) {
    Placement setup;
    setup.replicas = c.replicas;
    setup.experts = c.experts;
    setup.shard_optimizer = true;
    expect_same(ref, kMoe, c.kind, c.devices, 4, 1, setup);
    const std::unique_ptr<Pipeline> pipeline = make_pipeline(kMoe, c.kind, c.devices, 4, 1, setup);
    int64_t state = 0;
    for (const StageMemory& m : pipeline->memory()) state += m.optimizer_state;
    EXPECT_EQ(state, param_bytes) << c.replicas << " replicas in groups of " << c.experts
                                  << ": momentum for every parameter once";
  }
}

// Multi-query attention (one key and value head for the four query heads)
// over 2 tensor-parallel ranks: each rank its query heads, the shared head
// read whole through tp_copy, its projections' gradients summed.
TEST(TensorParallel, ASharedKeyHeadMatchesOneDevice) {
  Model multi_query = kLlama;
  multi_query.overrides["R"] = 4;
  const Reference ref = single_device(multi_query);
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1}) {
    Placement setup;
    setup.tensor = 2;
    // The query projections are cut between the ranks, the shared key and value ones not.
    std::set<std::string> cut;
    for (const PlanStage& s : make_plan(multi_query, kind, 2, 4, 1, setup).stages)
      for (const PlanShard& part : s.shards)
        for (const PlanParam& p : part.params)
          if (p.piece) cut.insert(p.piece->whole);
    EXPECT_TRUE(cut.count("layers.0.attention.wq") && cut.count("layers.5.attention.wo"));
    EXPECT_FALSE(cut.count("layers.0.attention.wk") || cut.count("layers.0.attention.wv"));
    expect_same(ref, multi_query, kind, 2, 4, 1, setup);
  }
}

// A load balancing loss couples the tokens of a micro-batch (the share
// choosing each expert times their mean probability): one device taking the
// batch whole loses another amount than taking it as micro-batches, which
// is why the suite above compares kMoe's pipelines with the latter.
TEST(MixtureOfExperts, TheBalancingLossCouplesAMicroBatchsTokens) {
  EXPECT_GT(std::fabs(one_device_accumulating(kMoe, 4).losses[0] - single_device(kMoe).losses[0]), 1e-4);
  Model unbalanced = kMoe;
  unbalanced.overrides["A"] = 1;
  EXPECT_LT(std::fabs(one_device_accumulating(unbalanced, 4).losses[0] - single_device(unbalanced).losses[0]),
            std::fabs(one_device_accumulating(kMoe, 4).losses[0] - single_device(kMoe).losses[0]));
}

TEST(PipelineFailure, AStageErrorStopsEveryWorkerWithOneMessage) { expect_bad_token_reported(); }

// A pipeline from `plan` loses what one device loses on `model`, step by step.
void expect_plan_matches_one_device(const Plan& plan, const Model& model, bool cpu_only) {
  PipelineOptions options;
  options.train = sgd();
  options.cpu_only = cpu_only;
  auto pipeline = Pipeline::from_plan(plan, options);
  pipeline->initialize(7);
  pipeline->start();
  Reference ref = single_device(model);
  Module full = load(model);
  verify_module(full, bind(full, model, kBatch));
  for (int step = 0; step < kSteps; ++step) {
    Batch batch = make_batch(full.graph(), step);
    EXPECT_NEAR(pipeline->train_step(batch.named).loss, ref.losses[step], 1e-5 * std::fabs(ref.losses[step]));
  }
}

// A plan compiled for GPUs runs every stage on the CPU when asked to, and
// computes there what one device computes.
TEST(PipelinePlacement, CpuOnlyRunsAGpuPlanOnTheCpu) {
  Module m = load(kMlp);
  DimBinding b = bind(m, kMlp, kBatch);
  CompileOptions co;
  co.devices = "h100:2";
  co.microbatches = 4;
  Plan plan = compile_plan(std::move(m), b, "mlp.pf", co).plan;
  ASSERT_EQ(plan.devices.at(0).kind, "cuda");
  expect_plan_matches_one_device(plan, kMlp, /*cpu_only=*/true);
}

// A model with tables that do not carry the batch: its plan marks them whole
// (and keeps the mark through JSON), and the pipeline built from the plan
// hands them whole to every micro-batch, computing what one device computes.
TEST(PipelineFromPlan, TablesReachEveryMicroBatchWhole) {
  Module m = load(kTables);
  DimBinding b = bind(m, kTables, kBatch);
  CompileOptions co;
  co.devices = "cpu:3";
  co.microbatches = 4;
  const Plan plan =
      plan_from_json(plan_to_json(compile_plan(std::move(m), b, "tables.pf", co).plan), "tables.json");
  std::map<std::string, std::pair<bool, std::string>> inputs;  // name -> whole, type as the stage reads it
  for (const PlanStage& stage : plan.stages)
    for (const PlanTensor& t : stage.inputs) inputs[t.name] = {t.whole, t.type.str()};
  using Input = std::pair<bool, std::string>;
  EXPECT_EQ(inputs, (std::map<std::string, Input>{{"x", {false, "f32[6,6]"}},
                                                   {"scale", {true, "f32[6,8]"}},
                                                   {"shift", {true, "f32[8]"}},
                                                   {"y", {false, "i32[6]"}}}));
  expect_plan_matches_one_device(plan, kTables, /*cpu_only=*/false);
}

}  // namespace
}  // namespace pf
