// swiglu and swiglu_grad against the chain they replace (silu then mul, and the chain's gradients: two muls and
// silu_grad): the same bits in f32, on shapes above the threads' grain and with a vector loop's tail, on one and
// two threads. Over an expert's slots, the slots in use are the chain's bits and the rest zeros.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/executor.h"
#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf::cpu {
namespace {

class SwigluTest : public testing::Test {
 protected:
  void TearDown() override { set_cpu_threads(1); }
};

using Outputs = std::vector<std::vector<float>>;

// Runs graph `text` on f32 inputs drawn from N(0, 3) (a route's i32 input,
// when there is one, is `route`) and returns its f32 results.
Outputs run(const std::string& text, int threads, const std::vector<int32_t>& route = {}) {
  set_cpu_threads(threads);
  Module m = parse_module_text("swiglu.pf", text);
  verify_module(m, m.binding());
  Executor ex(m.graph(), m.binding(), DType::f32);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> inputs;
  for (int a = 0; a < static_cast<int>(m.graph().args.size()); ++a) {
    if (ex.input_type(a).dtype == DType::i32) {
      ex.bind_input(a, route.data());
      continue;
    }
    inputs.emplace_back(static_cast<size_t>(ex.input_type(a).numel()));
    for (float& v : inputs.back()) v = normal(rng);
    ex.bind_input(a, inputs.back().data());
  }
  // Results land in NaNs: an element a kernel leaves unwritten shows.
  Outputs out;
  for (int r = 0; r < ex.num_outputs(); ++r) {
    out.emplace_back(static_cast<size_t>(ex.output_type(r).numel()), std::numeric_limits<float>::quiet_NaN());
    ex.bind_output(r, out.back().data());
  }
  ex.run();
  return out;
}

// The fused ops and the chain over `type`, with `route` when it is given
// ("": none): results y, d gate, d up.
std::string fused(const std::string& type, const std::string& route = "") {
  const std::string args = route.empty() ? "" : ", %route: " + route, extra = route.empty() ? "" : ", %route";
  return "graph @fused(%gate: " + type + ", %up: " + type + ", %g: " + type + args + ") -> (" + type + ", " + type +
         ", " + type + ") {\n  %y = swiglu %gate, %up" + extra + " : " + type +
         "\n  %d.gate, %d.up = swiglu_grad %g, %gate, %up" + extra + " : " + type + ", " + type +
         "\n  return %y, %d.gate, %d.up\n}\n";
}

std::string chain(const std::string& type) {
  return "graph @chain(%gate: " + type + ", %up: " + type + ", %g: " + type + ") -> (" + type + ", " + type + ", " +
         type + ") {\n  %act = silu %gate : " + type + "\n  %y = mul %act, %up : " + type +
         "\n  %d.act = mul %g, %up : " + type + "\n  %d.gate = silu_grad %d.act, %gate : " + type +
         "\n  %d.up = mul %g, %act : " + type + "\n  return %y, %d.gate, %d.up\n}\n";
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST_F(SwigluTest, GivesTheChainsBitsOnOneAndTwoThreads) {
  // Above two grains of 2^15 elements, an odd size whose vector loops end in
  // a tail, and one above two grains whose halves would end in tails.
  for (const std::string type : {"f32[8,64,160]", "f32[3,37,29]", "f32[65543]"}) {
    const Outputs want = run(chain(type), 1);
    for (int threads : {1, 2}) {
      const Outputs got = run(fused(type), threads);
      ASSERT_EQ(got.size(), 3u);
      for (size_t r = 0; r < 3; ++r)
        EXPECT_TRUE(same_bits(got[r], want[r])) << type << ", " << threads << " threads: result " << r << " differs";
    }
  }
}

TEST_F(SwigluTest, OverAnExpertsSlotsComputesTheSlotsInUseOnly) {
  // 4 experts of 96 slots, 64 features: 96, 0, 95 and 1 slots in use (a hole
  // before the last in use counts as in use, as moe_matmul reads it).
  const int64_t experts = 4, capacity = 96, features = 64;
  std::vector<int32_t> route(static_cast<size_t>(experts * capacity), -1);
  const int64_t used[] = {96, 0, 95, 1};
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t s = 0; s < used[e]; ++s) route[static_cast<size_t>(e * capacity + s)] = static_cast<int32_t>(s);
  route[2 * capacity + 40] = -1;
  const std::string type = "f32[4,96,64]";
  const Outputs whole = run(chain(type), 1);
  for (int threads : {1, 2}) {
    const Outputs got = run(fused(type, "i32[4,96]"), threads, route);
    ASSERT_EQ(got.size(), 3u);
    for (size_t r = 0; r < 3; ++r) {
      for (int64_t e = 0; e < experts; ++e) {
        const auto first = static_cast<size_t>(e * capacity * features);
        const auto in_use = static_cast<size_t>(used[e] * features), all = static_cast<size_t>(capacity * features);
        const std::vector<float> computed(got[r].begin() + first, got[r].begin() + first + in_use);
        EXPECT_TRUE(same_bits(computed, {whole[r].begin() + first, whole[r].begin() + first + in_use}))
            << threads << " threads: result " << r << ", expert " << e;
        for (size_t i = first + in_use; i < first + all; ++i)
          ASSERT_EQ(got[r][i], 0.0f) << threads << " threads: result " << r << ", expert " << e << ", element " << i;
      }
    }
  }
}

}  // namespace
}  // namespace pf::cpu
