// An optimizer's state shared out between replicas: how the parameters are
// cut into shares, that stepping the shares is stepping the whole, and that
// a share loads its part of a whole checkpoint.
#include "runtime/optimizer_shard.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

/// Parameters of the given shapes over arrays of their own, values and
/// gradients drawn from `seed`.
struct Arrays {
  std::vector<std::vector<float>> values, grads;
  std::vector<Param> params;

  Arrays(const std::vector<Shape>& shapes, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const Shape& shape : shapes) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      values.emplace_back(static_cast<size_t>(n));
      grads.emplace_back(static_cast<size_t>(n));
      for (float& v : values.back()) v = normal(rng);
      for (float& g : grads.back()) g = normal(rng);
    }
    for (size_t i = 0; i < shapes.size(); ++i)
      params.push_back({fmt::format("p{}", i), shapes[i], values[i].data(), grads[i].data(), shapes[i].size() >= 2});
  }
};

const std::vector<Shape> kShapes = {{37, 5}, {7}, {64, 33}, {}, {3, 4, 5}};

TEST(ShardPieces, EveryElementInOneShareOfNearlyEqualRuns) {
  Arrays a(kShapes, 1);
  int64_t total = 0;
  for (const Param& p : a.params) total += p.numel();
  for (int replicas : {1, 2, 3, 4, 7}) {
    const std::vector<ShardPiece> pieces = shard_pieces(a.params, replicas);
    std::vector<int> owners(static_cast<size_t>(total), -1);
    std::vector<int64_t> share(static_cast<size_t>(replicas), 0);
    int64_t flat_end = 0;  // each piece starts where the one before ended
    for (const ShardPiece& piece : pieces) {
      ASSERT_GT(piece.count, 0);
      int64_t start = 0;
      for (size_t i = 0; i < piece.param; ++i) start += a.params[i].numel();
      const int64_t flat = start + piece.offset;
      EXPECT_EQ(flat, flat_end) << "replica " << piece.replica;
      flat_end = flat + piece.count;
      for (int64_t e = flat; e < flat + piece.count; ++e) owners[static_cast<size_t>(e)] = piece.replica;
      share[static_cast<size_t>(piece.replica)] += piece.count;
    }
    EXPECT_EQ(flat_end, total);
    for (size_t e = 1; e < owners.size(); ++e) {
      ASSERT_GE(owners[e], owners[e - 1]) << "replicas own runs in order";
      if (owners[e] != owners[e - 1]) {
        EXPECT_EQ(e % kShardAlignment, 0u) << "a share begins on a cache line";
      }
    }
    for (int r = 0; r < replicas; ++r)
      EXPECT_LE(std::abs(share[static_cast<size_t>(r)] - total / replicas), kShardAlignment)
          << replicas << " replicas, replica " << r;
  }
}

TEST(ShardPieces, FewerElementsThanAlignedSharesLeaveLaterReplicasNone) {
  Arrays a({{5}, {3}}, 2);
  const std::vector<ShardPiece> pieces = shard_pieces(a.params, 4);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].replica, 3);  // every cut rounds to 0
  EXPECT_EQ(pieces[1].replica, 3);
  EXPECT_TRUE(shard_params(a.params, 0, 4).empty());
  EXPECT_EQ(error_of([&] { shard_pieces(a.params, 0); }), "an optimizer shared by 0 replicas");
}

// Each share's optimizer does to its elements what one optimizer of the whole
// does: after three steps every weight and every state element has the same bits.
TEST(ShardedOptimizer, SharesStepTheBitsOfTheWhole) {
  for (const char* kind : {"adamw", "sgd"})
    for (int replicas : {2, 3}) {
      Arrays whole(kShapes, 3), shared(kShapes, 3);
      auto one = make_optimizer(kind, whole.params, 0.9, 0.1);
      std::vector<std::unique_ptr<Optimizer>> shares;
      for (int r = 0; r < replicas; ++r)
        shares.push_back(make_optimizer(kind, shard_params(shared.params, r, replicas), 0.9, 0.1));
      for (int step = 0; step < 3; ++step) {
        one->step(0.01);
        for (auto& s : shares) s->step(0.01);
      }
      for (size_t p = 0; p < kShapes.size(); ++p)
        for (size_t i = 0; i < whole.values[p].size(); ++i)
          ASSERT_EQ(whole.values[p][i], shared.values[p][i]) << kind << " x" << replicas << " p" << p << "[" << i << "]";
      // A whole checkpoint of the one optimizer loads into the shares.
      SafeTensors file;
      one->save_state(file);
      for (auto& s : shares) {
        s->load_state(file);
        for (const StateBuffer& b : s->state()) {
          const std::span<const float> all = file.at(b.name).view<float>();
          for (int64_t i = 0; i < b.type.numel(); ++i)
            ASSERT_EQ(b.data[i], all[static_cast<size_t>(b.offset + i)]) << b.name;
        }
      }
    }
}

TEST(ShardedOptimizer, APieceShowsItsPartOfTheWholeState) {
  Arrays a({{8, 8}}, 4);
  const std::vector<Param> second = shard_params(a.params, 1, 2);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].offset, 32);
  EXPECT_EQ(second[0].shape, Shape{32});
  EXPECT_EQ(second[0].whole_shape(), (Shape{8, 8}));
  auto adam = make_optimizer("adamw", second, 0, 0);
  const std::vector<StateBuffer> state = adam->state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].name, "p0.exp_avg");
  EXPECT_EQ(state[0].type.str(), "f32[32]");
  EXPECT_EQ(state[0].whole.str(), "f32[8,8]");
  EXPECT_EQ(state[0].offset, 32);
  SafeTensors out;
  EXPECT_EQ(error_of([&] { adam->save_state(out); }),
            "optimizer: it steps a piece of 'p0', so its state is part of a checkpoint's");
  Param bad = second[0];
  bad.offset = 40;
  EXPECT_EQ(error_of([&] { make_optimizer("sgd", {bad}, 0.9, 0); }),
            "optimizer: the piece of 'p0' ([32] at 40) is not a run of its 64 elements");
}

}  // namespace
}  // namespace pf
