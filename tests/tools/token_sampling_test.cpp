// Drawing a token from logits: the most likely one, softmax frequencies under temperature and top-k, and errors.
#include "tools/token_sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ir/diagnostic.h"
#include "tests/error_of.h"

namespace pf::tools {
namespace {

using testing_support::error_of;

std::vector<float> log_of(const std::vector<double>& p) {
  std::vector<float> out;
  for (double x : p) out.push_back(x > 0 ? static_cast<float>(std::log(x)) : -std::numeric_limits<float>::infinity());
  return out;
}

/// How often each token is drawn in `draws` draws, as fractions.
std::vector<double> frequencies(const std::vector<float>& logits, const Sampling& how, int draws) {
  std::mt19937_64 rng(7);
  std::vector<double> out(logits.size());
  for (int i = 0; i < draws; ++i) out[static_cast<size_t>(draw_token(logits, how, rng))] += 1.0 / draws;
  return out;
}

TEST(TokenSampling, TemperatureZeroAndTopOneTakeTheFirstLargestLogit) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  std::mt19937_64 rng(1);
  EXPECT_EQ(draw_token(logits, {0.0, 0}, rng), 1);
  EXPECT_EQ(draw_token(logits, {1.0, 1}, rng), 1);
  EXPECT_EQ(draw_token(logits, {5.0, 1}, rng), 1);
}

TEST(TokenSampling, DrawsInProportionToTheSoftmax) {
  const std::vector<double> p = {0.5, 0.3, 0.2, 0.0};
  const std::vector<double> f = frequencies(log_of(p), {1.0, 0}, 40000);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(f[i], p[i], 0.01) << i;
  EXPECT_EQ(f[3], 0.0);  // a probability of zero is never drawn
}

TEST(TokenSampling, TemperatureRaisesTheProbabilitiesToItsInverse) {
  const std::vector<double> p = {0.5, 0.3, 0.2};
  for (double t : {0.5, 2.0}) {
    std::vector<double> q;
    double total = 0;
    for (double x : p) total += std::pow(x, 1 / t);
    for (double x : p) q.push_back(std::pow(x, 1 / t) / total);
    const std::vector<double> f = frequencies(log_of(p), {t, 0}, 40000);
    for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(f[i], q[i], 0.01) << "temperature " << t << ", token " << i;
  }
}

TEST(TokenSampling, TopKDrawsAmongTheKMostLikelyRenormalised) {
  const std::vector<double> p = {0.2, 0.5, 0.1, 0.2};
  const std::vector<double> f = frequencies(log_of(p), {1.0, 2}, 40000);
  // Tokens 1 and the first of the tied 0 and 3 stay, in proportion 0.5 : 0.2.
  EXPECT_NEAR(f[1], 0.5 / 0.7, 0.01);
  EXPECT_NEAR(f[0], 0.2 / 0.7, 0.01);
  EXPECT_EQ(f[2], 0.0);
  EXPECT_EQ(f[3], 0.0);
}

TEST(TokenSampling, TopPDrawsAmongTheFewestTokensHoldingP) {
  const std::vector<float> logits = log_of({0.5, 0.3, 0.15, 0.05});
  // 0.5 + 0.3 hold 0.7: the two, renormalised.
  std::vector<double> f = frequencies(logits, {1.0, 0, 0.7}, 40000);
  EXPECT_NEAR(f[0], 0.5 / 0.8, 0.01);
  EXPECT_NEAR(f[1], 0.3 / 0.8, 0.01);
  EXPECT_EQ(f[2] + f[3], 0.0);
  // The most likely token alone holds more than 0.45.
  f = frequencies(logits, {1.0, 0, 0.45}, 1000);
  EXPECT_EQ(f[1] + f[2] + f[3], 0.0);
  // After top-k 3, p is of what the three hold: 0.9 of 0.95 needs all three.
  f = frequencies(logits, {1.0, 3, 0.9}, 40000);
  EXPECT_NEAR(f[0], 0.5 / 0.95, 0.01);
  EXPECT_NEAR(f[2], 0.15 / 0.95, 0.01);
  EXPECT_EQ(f[3], 0.0);
}

TEST(TokenSampling, TopPOfOneDrawsWhatNoTopPDraws) {
  const std::vector<float> logits = {0.1f, 1.5f, -0.3f, 0.7f, 0.0f};
  std::mt19937_64 a(3), b(3);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(draw_token(logits, {0.8, 0, 1.0}, a), draw_token(logits, {0.8, 0}, b));
}

TEST(TokenSampling, ASeedGivesTheSameTokens) {
  const std::vector<float> logits = log_of({0.25, 0.25, 0.25, 0.25});
  std::mt19937_64 a(42), b(42), c(43);
  std::vector<int64_t> x, y, z;
  for (int i = 0; i < 32; ++i) {
    x.push_back(draw_token(logits, {}, a));
    y.push_back(draw_token(logits, {}, b));
    z.push_back(draw_token(logits, {}, c));
  }
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
}

TEST(TokenSampling, RejectsWhatItCannotDrawFrom) {
  std::mt19937_64 rng(0);
  const std::vector<float> ok = {1.0f, 2.0f};
  EXPECT_EQ(error_of([&] { draw_token(ok, {-0.5, 0}, rng); }), "temperature -0.5 is not a number of 0 or more");
  EXPECT_EQ(error_of([&] { draw_token(ok, {1.0, -1}, rng); }), "top-k -1 is negative (0 keeps every token)");
  EXPECT_EQ(error_of([&] { draw_token({}, {}, rng); }), "no logits to draw a token from");
  EXPECT_EQ(error_of([&] { draw_token(ok, {1.0, 0, 0.0}, rng); }), "top-p 0 is not in (0, 1] (1 keeps every token)");
  EXPECT_EQ(error_of([&] { draw_token(ok, {1.0, 0, 1.5}, rng); }),
            "top-p 1.5 is not in (0, 1] (1 keeps every token)");
  const std::vector<float> nan = {1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f};
  EXPECT_EQ(error_of([&] { draw_token(nan, {}, rng); }),
            "the logits hold nan (token 1): the weights do not give finite numbers");
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> none = {-inf, -inf};
  EXPECT_EQ(error_of([&] { draw_token(none, {}, rng); }),
            "the logits hold -inf (token 0): the weights do not give finite numbers");
}

}  // namespace
}  // namespace pf::tools
