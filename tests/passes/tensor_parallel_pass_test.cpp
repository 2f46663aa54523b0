// The tensor-parallel pass against the whole model, in float64: T ranks,
// each running the program the pass writes for it (and the backward autodiff
// derives from that) on a thread of its own and summing through a group,
// compute the whole model's loss, and each rank the gradients of its blocks
// of the parameters, which tile the whole model's gradients. The
// expert-parallel pass likewise, its replicas each on tokens of their own.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "backends/cpu/executor.h"
#include "ir/param_piece.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/pipeline.h"
#include "passes/tensor_parallel_layout.h"
#include "tests/thread_group.h"

namespace pf {
namespace {

/// A model through the model pipeline (inlined, typed, attention fused).
Module prepared(const std::string& example, const std::string& bind, DimBinding& binding) {
  Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/" + example));
  binding = m.binding(parse_binding(bind));
  verify_module(m, binding, VerifyOptions{true});
  PassContext ctx{binding};
  run_pipeline(m, PassPipeline::model, ctx);
  return m;
}

struct Gradients {
  double loss = 0;
  std::map<std::string, std::vector<double>> params;  // by the program's parameter names
  std::map<std::string, std::optional<ParamPiece>> pieces;
};

using Values = std::map<std::string, std::vector<double>>;

/// Forward and backward of `m` (the whole model, or one rank's program) on
/// `inputs`, its parameters taken from (or cut out of) the whole's `whole`.
using Inputs = std::vector<std::vector<std::byte>>;  // one buffer per graph argument

Gradients run(Module m, const DimBinding& binding, const Inputs& inputs, const Values& whole,
              backend::TensorParallelGroup* group, backend::TensorParallelGroup* experts = nullptr) {
  const GradientProgram program = differentiate(m, binding);
  const Function& g = m.graph();
  cpu::ExecutorOptions options;
  options.tensor_parallel = group;
  options.expert_parallel = experts;
  Gradients out;
  std::vector<std::vector<double>> params;
  for (const std::string& name : program.params) {
    const Op& op = g.ops[g.values[g.find_value(name)].def_op];
    const std::optional<ParamPiece> piece = param_piece(op);
    const TensorType& type = g.type_of(op.results[0]);
    std::vector<double> values(type.numel());
    const std::vector<double>& from = whole.at(piece ? piece->whole : name);
    if (piece)
      piece->cut(type, reinterpret_cast<const std::byte*>(from.data()), reinterpret_cast<std::byte*>(values.data()),
                 sizeof(double));
    else
      values = from;
    params.push_back(std::move(values));
    out.pieces[name] = piece;
  }
  cpu::Executor fwd(g, binding, DType::f64, options);
  for (size_t a = 0; a < inputs.size(); ++a) fwd.bind_input(static_cast<int>(a), inputs[a].data());
  for (size_t i = 0; i < params.size(); ++i) fwd.bind_param(program.params[i], params[i].data());
  fwd.run();
  out.loss = *static_cast<const double*>(fwd.output(0));
  cpu::Executor back(*m.find_function(program.backward), binding, DType::f64, options);
  const double seed = 1;
  back.bind_input(0, &seed);
  for (size_t s = 0; s < program.stash.size(); ++s)
    back.bind_input(static_cast<int>(1 + s), fwd.output(program.original_results + static_cast<int>(s)));
  for (size_t i = 0; i < params.size(); ++i)
    if (m.find_function(program.backward)->find_value(program.params[i]) >= 0)
      back.bind_param(program.params[i], params[i].data());
  back.run();
  for (size_t i = 0; i < program.params.size(); ++i) {
    const auto* p = static_cast<const double*>(back.output(static_cast<int>(i)));
    out.params[program.params[i]].assign(p, p + back.output_type(static_cast<int>(i)).numel());
  }
  return out;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-12 + 1e-9 * std::abs(want[i])) << what << " at " << i;
}

/// Random inputs for `g`'s arguments: normal floats, integers below `classes`.
Inputs random_inputs(const Function& g, int classes, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 0.5);
  Inputs inputs;
  for (ValueId a : g.args) {
    const TensorType& type = g.type_of(a);
    std::vector<std::byte>& bytes = inputs.emplace_back(static_cast<size_t>(type.numel()) * 8);
    for (int64_t i = 0; i < type.numel(); ++i) {
      if (is_float(type.dtype))
        reinterpret_cast<double*>(bytes.data())[i] = normal(rng);
      else
        reinterpret_cast<int32_t*>(bytes.data())[i] = static_cast<int32_t>(rng() % static_cast<uint64_t>(classes));
    }
  }
  return inputs;
}

/// Random values for every parameter of `g`, by name.
Values random_params(const Function& g, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 0.5);
  Values whole;
  for (const Op& op : g.ops)
    if (op.kind == OpKind::param) {
      std::vector<double>& v = whole[g.values[op.results[0]].name];
      v.resize(g.type_of(op.results[0]).numel());
      for (double& x : v) x = normal(rng);
    }
  return whole;
}

/// A rank's gradient of its block `piece` of a parameter of `g`, placed
/// where the block sits in `into` (the whole parameter's, NaN until filled).
void place_block(const Function& g, const ParamPiece& piece, const std::vector<double>& grad,
                 std::vector<double>& into) {
  TensorType type{DType::f64, g.type_of(g.find_value(piece.whole)).shape};
  type.shape[static_cast<size_t>(piece.axis)] = piece.size();
  piece.place(type, reinterpret_cast<const std::byte*>(grad.data()), reinterpret_cast<std::byte*>(into.data()),
              sizeof(double));
}

/// Runs `rank(r, group)` for each of `degree` ranks on a thread of its own,
/// the ranks meeting through one group.
void on_ranks(int degree, const std::function<void(int, backend::TensorParallelGroup&)>& rank) {
  ThreadGroup group(degree);
  std::vector<ThreadGroup::Rank> ranks;
  for (int r = 0; r < degree; ++r) ranks.emplace_back(group, r);
  std::vector<std::thread> threads;
  for (int r = 0; r < degree; ++r) threads.emplace_back([&, r] { rank(r, ranks[static_cast<size_t>(r)]); });
  for (std::thread& t : threads) t.join();
}

/// Runs `m` whole and as `degree` ranks (under sequence parallelism with
/// `sequence`), and compares. Returns the parameters the ranks split.
std::set<std::string> expect_ranks_compute_the_whole(const Module& m, const DimBinding& binding, int degree, int classes,
                                                     bool sequence = false) {
  const Function& g = m.graph();
  std::mt19937_64 rng(7);
  const Inputs inputs = random_inputs(g, classes, rng);
  const Values whole = random_params(g, rng);
  const Gradients reference = run(m, binding, inputs, whole, nullptr);

  std::vector<Gradients> got(static_cast<size_t>(degree));
  on_ranks(degree, [&](int r, backend::TensorParallelGroup& group) {
    Module program = m;
    PassContext ctx{binding};
    ctx.tensor_parallel = degree;
    ctx.tensor_parallel_rank = r;
    ctx.sequence_parallel = sequence;
    run_passes(program, {"tensor-parallel"}, ctx);
    if (sequence) {
      const std::vector<Op>& ops = program.graph().ops;
      EXPECT_TRUE(
          std::any_of(ops.begin(), ops.end(), [](const Op& op) { return op.kind == OpKind::tp_reduce_scatter; }))
          << "rank " << r << " holds no part of the tokens";
    }
    got[static_cast<size_t>(r)] = run(std::move(program), binding, inputs, whole, &group);
  });

  // Every rank's loss is the whole model's; a whole parameter's gradient is
  // the whole model's on every rank; the blocks' gradients, placed where
  // their blocks sit in the whole, give the whole model's.
  Values joined;
  int pieces = 0;
  for (int r = 0; r < degree; ++r) {
    const Gradients& rank = got[static_cast<size_t>(r)];
    EXPECT_NEAR(rank.loss, reference.loss, 1e-12) << "rank " << r;
    for (const auto& [name, grad] : rank.params) {
      const std::optional<ParamPiece>& piece = rank.pieces.at(name);
      if (!piece) {
        expect_near(grad, reference.params.at(name), fmt::format("rank {}: {}", r, name));
        continue;
      }
      ++pieces;
      std::vector<double>& into = joined[piece->whole];
      into.resize(reference.params.at(piece->whole).size(), std::nan(""));
      place_block(g, *piece, grad, into);
    }
  }
  EXPECT_GT(pieces, 0) << "nothing was split";
  std::set<std::string> split;
  for (const auto& [name, grad] : joined) {
    expect_near(grad, reference.params.at(name), "joined " + name);
    split.insert(name);
  }
  return split;
}

// Each rank holds a block of the tied table's rows, looks up the tokens it
// holds, projects onto its classes and takes its part of the loss: evenly
// (12 classes), unevenly (11: 5 and 6 over two ranks, 2, 3, 3 and 3 over
// four), and not at all where there are fewer classes than ranks (3 over 4).
TEST(TensorParallelPass, GptRanksComputeTheWholeModel) {
  for (const int vocab : {3, 11, 12}) {
    DimBinding binding;
    const Module m = prepared("gpt.pf", fmt::format("B=2,T=4,S=4,C=16,H=4,L=2,V={}", vocab), binding);
    for (int degree : {2, 4}) {
      SCOPED_TRACE(fmt::format("{} classes, {} ranks", vocab, degree));
      EXPECT_EQ(expect_ranks_compute_the_whole(m, binding, degree, vocab).count("wte"), vocab >= degree ? 1 : 0);
    }
  }
}

// Hidden widths that divide (8) and that do not (7: 3 and 4 columns per
// rank, the next product's rows cut alike); 5 classes as 2 and 3.
TEST(TensorParallelPass, MlpRanksComputeTheWholeModel) {
  for (const int hidden : {8, 7}) {
    SCOPED_TRACE(fmt::format("hidden width {}", hidden));
    DimBinding binding;
    const Module m = prepared("mlp.pf", fmt::format("B=4,I=6,H={},L=2,K=5", hidden), binding);
    EXPECT_EQ(expect_ranks_compute_the_whole(m, binding, 2, 5).size(), 6u);
  }
}

// Sequence parallelism: the norms, biases and residual adds run on each
// rank's part of the tokens, evenly (4 tokens over 2 and 4 ranks) and not
// (5 over 2: 2 and 3; 3 over 2: 1 and 2), the layer norms' weights summed
// over the ranks' tokens.
TEST(TensorParallelPass, GptRanksOnPartsOfTheTokensComputeTheWholeModel) {
  for (const int tokens : {4, 5, 3}) {
    DimBinding binding;
    const Module m = prepared("gpt.pf", fmt::format("B=2,T={},S=8,C=16,H=4,L=2,V=11", tokens), binding);
    for (int degree : {2, 4}) {
      if (tokens < degree) continue;
      SCOPED_TRACE(fmt::format("{} tokens, {} ranks", tokens, degree));
      EXPECT_EQ(expect_ranks_compute_the_whole(m, binding, degree, 11, true).count("wte"), 1);
    }
  }
}

// In an MLP the tokens are the batch's rows ([B, H]): 4 rows over 2 ranks,
// and 3 over 2.
TEST(TensorParallelPass, MlpRanksOnPartsOfTheRowsComputeTheWholeModel) {
  for (const int batch : {4, 3}) {
    SCOPED_TRACE(fmt::format("{} rows", batch));
    DimBinding binding;
    const Module m = prepared("mlp.pf", fmt::format("B={},I=6,H=8,L=2,K=5", batch), binding);
    EXPECT_EQ(expect_ranks_compute_the_whole(m, binding, 2, 5, true).size(), 6u);
  }
}

// A mixture of experts is cut by experts: each rank holds a block of them
// (4 over 2 ranks, over 3 as 1, 1 and 2, over 4 one each), sends every token
// only to the experts it holds, and the group sums the ranks' parts of each
// token's output. The router and the load balancing loss run whole on every
// rank; under sequence parallelism the norms and residual adds run on the
// ranks' parts of the tokens beside it.
TEST(TensorParallelPass, MixtureOfExpertsRanksComputeTheWholeModel) {
  DimBinding binding;
  const Module m = prepared("moe.pf", "B=2,T=4,C=16,H=4,R=2,F=12,L=2,E=4,K=2,A=50,V=11", binding);
  for (const auto& [degree, sequence] : {std::pair{2, false}, {3, false}, {4, false}, {2, true}}) {
    SCOPED_TRACE(fmt::format("{} ranks{}", degree, sequence ? ", parts of the tokens" : ""));
    const std::set<std::string> split = expect_ranks_compute_the_whole(m, binding, degree, 11, sequence);
    for (const char* w : {"w1", "w2", "w3"})
      for (int layer : {0, 1}) EXPECT_EQ(split.count(fmt::format("layers.{}.experts.{}", layer, w)), 1u) << w;
    EXPECT_EQ(split.count("layers.0.router.w"), 0u);
  }
}

// Experts shared out over data-parallel replicas: each replica holds a
// block of every layer's experts (4 over 2 replicas, over 3 as 1, 1 and 2,
// over 4 one each) and trains on its own tokens, which every replica's
// experts take. Each replica computes the loss and the gradients of the whole
// model on its tokens alone, but for the experts: a replica's block gets the
// sum over every replica's tokens, the sum of the replicas' gradients that
// data parallelism's average is made of.
TEST(ExpertParallelPass, ReplicasComputeTheWholeModelOnTheirTokens) {
  DimBinding binding;
  const Module m = prepared("moe.pf", "B=2,T=4,C=16,H=4,R=2,F=12,L=2,E=4,K=2,A=50,V=11", binding);
  const Function& g = m.graph();
  for (const int degree : {2, 3, 4}) {
    SCOPED_TRACE(fmt::format("{} replicas", degree));
    std::mt19937_64 rng(11);
    const Values whole = random_params(g, rng);
    std::vector<Inputs> inputs;
    std::vector<Gradients> alone;  // each replica's tokens through the whole model
    for (int r = 0; r < degree; ++r) {
      inputs.push_back(random_inputs(g, 11, rng));
      alone.push_back(run(m, binding, inputs.back(), whole, nullptr));
    }
    std::vector<Gradients> got(static_cast<size_t>(degree));
    on_ranks(degree, [&](int r, backend::TensorParallelGroup& group) {
      Module program = m;
      PassContext ctx{binding};
      ctx.expert_parallel = degree;
      ctx.expert_parallel_rank = r;
      EXPECT_EQ(run_passes(program, {"expert-parallel"}, ctx).size(), 1u);
      got[static_cast<size_t>(r)] = run(std::move(program), binding, inputs[static_cast<size_t>(r)], whole, nullptr,
                                        &group);
    });

    Values joined;
    for (int r = 0; r < degree; ++r) {
      const Gradients& replica = got[static_cast<size_t>(r)];
      const Gradients& reference = alone[static_cast<size_t>(r)];
      EXPECT_NEAR(replica.loss, reference.loss, 1e-12) << "replica " << r;
      for (const auto& [name, grad] : replica.params) {
        const std::optional<ParamPiece>& piece = replica.pieces.at(name);
        if (!piece) {
          expect_near(grad, reference.params.at(name), fmt::format("replica {}: {}", r, name));
          continue;
        }
        std::vector<double>& into = joined[piece->whole];
        into.resize(reference.params.at(piece->whole).size(), std::nan(""));
        place_block(g, *piece, grad, into);
      }
    }
    std::set<std::string> split;
    for (const auto& [name, grad] : joined) {
      std::vector<double> sum(grad.size(), 0.0);
      for (const Gradients& reference : alone)
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += reference.params.at(name)[i];
      expect_near(grad, sum, "joined " + name);
      split.insert(name);
    }
    for (const char* w : {"w1", "w2", "w3"})
      for (int layer : {0, 1}) EXPECT_EQ(split.count(fmt::format("layers.{}.experts.{}", layer, w)), 1u) << w;
    EXPECT_EQ(split.size(), 6u);
  }
}

}  // namespace
}  // namespace pf
