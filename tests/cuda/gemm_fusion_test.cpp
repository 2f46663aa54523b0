// Which linear layers the CUDA executor runs as one cuBLASLt GEMM with a bias (and GELU) epilogue (host only), and
// that layer against the CPU executor (skipped without a GPU).
#include "backends/cuda/gemm_fusion.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/executor.h"
#include "backends/cuda/executor.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/verified_module.h"

namespace pf::cuda {
namespace {

// An MLP block of examples/gpt.pf at small sizes; `tail` finishes it.
std::string linear_graph(const std::string& tail, const std::string& results = "f32[2,3,8]") {
  return R"(
graph @mlp(%x: f32[2,3,4]) -> )" +
         results + R"( {
  %w = param init=xavier : f32[4,8]
  %b = param init=normal(1) : f32[8]
  %fc.mm = matmul %x, %w : f32[2,3,8]
  %fc = add %fc.mm, %b : f32[2,3,8]
  %act = gelu %fc : f32[2,3,8]
)" + tail + "}\n";
}

TEST(GemmFusion, FoldsTheBiasAndTheGelu) {
  const Module m = verified_module(linear_graph("  return %act\n"));
  const Function& f = m.graph();
  const std::vector<GemmEpilogue> found = find_gemm_epilogues(f, {});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].matmul, 2);
  EXPECT_EQ(found[0].add, 3);
  EXPECT_EQ(found[0].gelu, 4);
  EXPECT_EQ(f.values[found[0].bias].name, "b");
  EXPECT_EQ(f.values[found[0].result].name, "act");
  ASSERT_EQ(found[0].intermediates.size(), 2u);
}

TEST(GemmFusion, AStashedPreActivationKeepsTheGeluApart) {
  // As in training: the forward returns %fc for gelu_grad.
  const Module m = verified_module(linear_graph("  return %act, %fc\n", "(f32[2,3,8], f32[2,3,8])"));
  const std::vector<GemmEpilogue> found = find_gemm_epilogues(m.graph(), {});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].gelu, -1);
  EXPECT_EQ(m.graph().values[found[0].result].name, "fc");
}

TEST(GemmFusion, LeavesAProductWithAnotherReaderOrATransposeAlone) {
  const Module shared = verified_module(linear_graph("  return %act, %fc.mm\n", "(f32[2,3,8], f32[2,3,8])"));
  EXPECT_TRUE(find_gemm_epilogues(shared.graph(), {}).empty());
  const Module transposed = verified_module(R"(
graph @t(%x: f32[3,4], %w: f32[8,4], %b: f32[8]) -> f32[3,8] {
  %mm = matmul %x, %w transpose_b=true : f32[3,8]
  %y = add %mm, %b : f32[3,8]
  return %y
}
)");
  EXPECT_TRUE(find_gemm_epilogues(transposed.graph(), {}).empty());
  // A bias that is not a vector of the product's columns.
  const Module rows = verified_module(R"(
graph @r(%x: f32[3,4], %w: f32[4,8], %b: f32[3,1]) -> f32[3,8] {
  %mm = matmul %x, %w : f32[3,8]
  %y = add %b, %mm : f32[3,8]
  return %y
}
)");
  EXPECT_TRUE(find_gemm_epilogues(rows.graph(), {}).empty());
}

TEST(GemmFusion, MatchesTheCpuExecutor) {
  PF_REQUIRE_CUDA();
  for (const bool stash : {false, true}) {
    SCOPED_TRACE(stash ? "bias only (pre-activation returned)" : "bias and gelu");
    const Module m = stash ? verified_module(linear_graph("  return %act, %fc\n", "(f32[2,3,8], f32[2,3,8])"))
                           : verified_module(linear_graph("  return %act\n"));
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> x(24), w(32), b(8);
    for (auto* v : {&x, &w, &b})
      for (float& e : *v) e = normal(rng);
    cpu::Executor cpu_ex(m.graph(), m.binding(), DType::f32);
    cpu_ex.bind_input(0, x.data());
    cpu_ex.bind_param("w", w.data());
    cpu_ex.bind_param("b", b.data());
    cpu_ex.run();
    CudaDevice device(0, 1);
    testing::DeviceBuffer dx(x.data(), x.size() * 4), dw(w.data(), w.size() * 4), db(b.data(), b.size() * 4);
    Executor ex(m.graph(), m.binding(), device, 0, DType::f32);
    ex.bind_input(0, dx.get());
    ex.bind_param("w", dw.get());
    ex.bind_param("b", db.get());
    ex.run();
    ex.finish();
    for (int r = 0; r < ex.num_outputs(); ++r) {
      std::vector<float> got(24);
      PF_CUDA_CHECK(cudaMemcpy(got.data(), ex.output(r), got.size() * 4, cudaMemcpyDeviceToHost));
      const auto* want = static_cast<const float*>(cpu_ex.output(r));
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_NEAR(got[i], want[i], 1e-4 * std::max(1.f, std::fabs(want[i]))) << "result " << r << "[" << i << "]";
    }
  }
}

}  // namespace
}  // namespace pf::cuda
