// Kernels split over threads: every index once, the same bits on 1 and 2 threads, and the executor's op timing.
#include "backends/cpu/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/executor.h"
#include "backends/cpu/kernels.h"
#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf::cpu {
namespace {

/// Restores the budget of 1 that every other test assumes.
class ParallelTest : public ::testing::Test {
 protected:
  void TearDown() override { set_cpu_threads(1); }
};

TEST_F(ParallelTest, VisitsEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    set_cpu_threads(threads);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{100003}}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> chunks{0};
      parallel_for(n, 100, [&](int64_t begin, int64_t end) {
        chunks.fetch_add(1);
        for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n " << n << " i " << i;
      // Never more chunks than threads, and one for a loop under two grains.
      EXPECT_LE(chunks.load(), n < 200 ? (n > 0 ? 1 : 0) : threads) << "n " << n;
    }
  }
}

// A chunk begins at a multiple of min(grain, 64): an element of a loop over
// elements keeps its place in the loop's vectors (a vector exp and the
// scalar one differ in the last bits), so an odd size, split, gives the
// bits of one chunk.
TEST_F(ParallelTest, ChunksBeginWhereAVectorWould) {
  for (int threads : {2, 3}) {
    set_cpu_threads(threads);
    for (const auto& [n, grain] : {std::pair<int64_t, int64_t>{100003, 100}, {65543, kElementwiseGrain}, {9, 3}}) {
      std::mutex m;
      std::vector<int64_t> begins;
      parallel_for(n, grain, [&](int64_t begin, int64_t) {
        const std::lock_guard<std::mutex> lock(m);
        begins.push_back(begin);
      });
      EXPECT_EQ(static_cast<int64_t>(begins.size()), std::min<int64_t>(threads, n / grain)) << "n " << n;
      for (int64_t b : begins) EXPECT_EQ(b % std::min<int64_t>(grain, kChunkAlignment), 0) << "n " << n;
    }
  }
  const auto exp_of = [](int threads) {
    set_cpu_threads(threads);
    std::vector<float> x(65543), y(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 1000) * 0.01f - 5.0f;
    const std::vector<TensorType> types = {{DType::f32, {static_cast<int64_t>(x.size())}}};
    const std::vector<const void*> in = {x.data()};
    const std::vector<void*> out = {y.data()};
    const OpAttrs attrs;
    forward_kernel(OpKind::exp, DType::f32)(KernelArgs{types, in, types, out, attrs});
    return y;
  };
  const std::vector<float> one = exp_of(1), two = exp_of(2);
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

TEST_F(ParallelTest, NestedLoopsRunInline) {
  set_cpu_threads(2);
  std::atomic<int64_t> total{0};
  parallel_for(4, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      parallel_for(1000, 10, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  });
  EXPECT_EQ(total.load(), 4000);
}

// A pipeline's workers each split over their own device's pool: the budget
// follows the pool in scope, every chunk runs, and two workers splitting at
// once both get their threads (a shared pool would run one of them inline).
TEST_F(ParallelTest, EachWorkerSplitsOverItsOwnPool) {
  EXPECT_EQ(kernel_threads(), 1);
  auto chunks_of_a_split = [](KernelPool* pool, std::atomic<int>& arrived) {
    KernelPoolScope scope(pool);
    std::atomic<int> chunks{0};
    parallel_for(1000, 10, [&](int64_t, int64_t) {
      chunks.fetch_add(1);
      // Every chunk waits (a while at most) until both workers' loops are
      // split, so that the two loops overlap.
      arrived.fetch_add(1);
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (arrived.load() < 4 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    });
    return chunks.load();
  };
  KernelPool a(2), b(2);
  std::atomic<int> arrived{0};
  int chunks_a = 0, chunks_b = 0;
  std::thread other([&] { chunks_b = chunks_of_a_split(&b, arrived); });
  chunks_a = chunks_of_a_split(&a, arrived);
  other.join();
  EXPECT_EQ(chunks_a, 2);
  EXPECT_EQ(chunks_b, 2);
  {
    KernelPoolScope scope(&a);
    EXPECT_EQ(kernel_threads(), 2);
    {
      KernelPoolScope inner(nullptr);
      EXPECT_EQ(kernel_threads(), 1);
    }
    EXPECT_EQ(kernel_threads(), 2);
  }
  EXPECT_EQ(kernel_threads(), 1);
}

// Every kernel that splits its loops or products, on shapes above the grain:
// the GPT block's ops forward and backward (GEMMs split by columns, by rows,
// batched attention products one matrix per thread, the fused attention's
// row blocks and heads in both layouts), a mixture of experts' routing,
// dispatch, combine and products (whole experts side by side on two
// threads), the optimizer-sized flat loops aside.
const char* kOps = R"(
graph @ops(%x: f32[8,64,512], %b: f32[512], %w: f32[512], %g: f32[8,64,512], %s: f32[8,8,64,64], %t: i32[512]) -> (f32[8,64,512], f32[8,64,512], f32[8,8,64,64], f32[8,8,64,64], f32[8,64,512], f32[8,64,512], f32[512], f32[512], f32[8,64,512], f32[512], f32[], f32[512,512], f32[8,64], f32[8,8,64,64], f32[8,64,512], f32[512,512], f32[8,8,64,64], f32[2048,100], f32[4,4,256,64], f32[4,4,256], f32[4,4,256,64], f32[4,4,256,64], f32[4,4,256,64], f32[4,256,4,64], f32[4,4,256], f32[4,256,4,64], f32[4,256,4,64], f32[4,256,4,64], i32[8,128], f32[8,128], f32[8,128,512], f32[512,512], f32[512,8], f32[8,128,64], f32[8,512,64]) {
  %sum = add %x, %g : f32[8,64,512]
  %biased = add %x, %b : f32[8,64,512]
  %two = constant value=2 : f32[]
  %scaled = mul %s, %two : f32[8,8,64,64]
  %causal = causal_mask : bool[64,64]
  %minus_inf = constant value=-inf : f32[]
  %masked = where %causal, %scaled, %minus_inf : f32[8,8,64,64]
  %probs = softmax %masked axis=-1 : f32[8,8,64,64]
  %ln = layernorm %x, %w, %b eps=1e-5 : f32[8,64,512]
  %dx, %dw, %db = layernorm_grad %g, %x, %w eps=1e-5 : f32[8,64,512], f32[512], f32[512]
  %act.grad = gelu_grad %g, %x : f32[8,64,512]
  %bias.grad = sum_to %g shape=[512] : f32[512]
  %logits = reshape %x shape=[512,512] : f32[512,512]
  %loss = cross_entropy %logits, %t : f32[]
  %one = constant value=1 : f32[]
  %dlogits = cross_entropy_grad %one, %logits, %t : f32[512,512]
  %rows = reduce_sum %x axes=[2] : f32[8,64]
  %dprobs = softmax_grad %s, %probs axis=-1 : f32[8,8,64,64]
  %linear = matmul %x, %logits : f32[8,64,512]
  %weight.grad = matmul %logits, %dlogits transpose_a=true : f32[512,512]
  %context = matmul %probs, %s : f32[8,8,64,64]
  %tall = reshape %x shape=[2048,128] : f32[2048,128]
  %top = slice %logits axis=0 start=0 end=128 : f32[128,512]
  %narrow = slice %top axis=1 start=0 end=100 : f32[128,100]
  %rows_split = matmul %tall, %narrow : f32[2048,100]
  %xq = reshape %x shape=[4,4,256,64] : f32[4,4,256,64]
  %gq = reshape %g shape=[4,4,256,64] : f32[4,4,256,64]
  %att, %att.lse = attention %xq, %gq, %xq causal=true : f32[4,4,256,64], f32[4,4,256]
  %dq, %dk, %dv = attention_grad %gq, %xq, %gq, %xq, %att, %att.lse causal=true : f32[4,4,256,64], f32[4,4,256,64], f32[4,4,256,64]
  %xt = reshape %x shape=[4,256,4,64] : f32[4,256,4,64]
  %gt = reshape %g shape=[4,256,4,64] : f32[4,256,4,64]
  %att.t, %att.t.lse = attention %xt, %gt, %xt causal=true layout="bthd" : f32[4,256,4,64], f32[4,4,256]
  %dq.t, %dk.t, %dv.t = attention_grad %gt, %xt, %gt, %xt, %att.t, %att.t.lse causal=true layout="bthd" : f32[4,256,4,64], f32[4,256,4,64], f32[4,256,4,64]
  %router = slice %logits axis=1 start=0 end=8 : f32[512,8]
  %route = moe_route %router top_k=2 capacity_factor=1 : i32[8,128]
  %gates = moe_gates %router, %route top_k=2 : f32[8,128]
  %slots = moe_dispatch %logits, %route : f32[8,128,512]
  %combined = moe_combine %slots, %route, %gates tokens=512 : f32[512,512]
  %drouter = moe_gates_grad %gates, %router, %route top_k=2 : f32[512,8]
  %experts.w = reshape %x shape=[8,512,64] : f32[8,512,64]
  %experts.out = moe_matmul %slots, %experts.w, %route : f32[8,128,64]
  %experts.grad = moe_matmul %slots, %experts.out, %route transpose_a=true : f32[8,512,64]
  return %sum, %biased, %scaled, %probs, %ln, %dx, %dw, %db, %act.grad, %bias.grad, %loss, %dlogits, %rows, %dprobs, %linear, %weight.grad, %context, %rows_split, %att, %att.lse, %dq, %dk, %dv, %att.t, %att.t.lse, %dq.t, %dk.t, %dv.t, %route, %gates, %slots, %combined, %drouter, %experts.out, %experts.grad
}
)";

std::vector<std::vector<std::byte>> run_ops(int threads, bool profile, backend::OpSeconds* seconds = nullptr) {
  set_cpu_threads(threads);
  Module m = parse_module_text("ops.pf", kOps);
  verify_module(m, m.binding());
  ExecutorOptions options;
  options.profile = profile;
  Executor ex(m.graph(), m.binding(), DType::f32, options);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> floats;
  for (int a = 0; a < 5; ++a) {
    floats.emplace_back(static_cast<size_t>(ex.input_type(a).numel()));
    for (float& v : floats.back()) v = normal(rng);
    ex.bind_input(a, floats.back().data());
  }
  std::vector<int32_t> targets(512);
  for (size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<int32_t>((i * 37) % 512);
  ex.bind_input(5, targets.data());
  ex.run();
  std::vector<std::vector<std::byte>> out;
  for (int r = 0; r < ex.num_outputs(); ++r) {
    const auto* p = static_cast<const std::byte*>(ex.output(r));
    out.emplace_back(p, p + ex.output_type(r).bytes());
  }
  if (seconds) *seconds = ex.op_seconds();
  return out;
}

TEST_F(ParallelTest, KernelsGiveTheSameBitsOnOneAndTwoThreads) {
  const auto one = run_ops(1, false);
  const auto two = run_ops(2, false);
  ASSERT_EQ(one.size(), two.size());
  for (size_t r = 0; r < one.size(); ++r) {
    ASSERT_EQ(one[r].size(), two[r].size());
    EXPECT_EQ(std::memcmp(one[r].data(), two[r].data(), one[r].size()), 0) << "result " << r << " differs";
  }
}

TEST_F(ParallelTest, ProfileTimesOpKindsOnlyWhenAsked) {
  backend::OpSeconds off{}, on{};
  run_ops(1, false, &off);
  for (double s : off) EXPECT_EQ(s, 0.0);
  run_ops(1, true, &on);
  EXPECT_GT(on[static_cast<size_t>(OpKind::softmax)], 0.0);
  EXPECT_GT(on[static_cast<size_t>(OpKind::layernorm_grad)], 0.0);
  EXPECT_GT(on[static_cast<size_t>(OpKind::matmul)], 0.0);
  EXPECT_EQ(on[static_cast<size_t>(OpKind::conv2d)], 0.0);  // no conv2d ran
}

}  // namespace
}  // namespace pf::cpu
