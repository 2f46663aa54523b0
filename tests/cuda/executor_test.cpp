// The CUDA executor: a small MLP's forward against hand-computed numbers, per-op profiles, and bad data reported with the op's name.
#include "backends/cuda/executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/executor.h"
#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/verified_module.h"

namespace pf::cuda {
namespace {

using testing::DeviceBuffer;

// The MLP of tests/cpu/executor_test.cpp, with its hand-computed numbers.
const char* kMlp = R"(
graph @mlp(%x: f32[2,3], %targets: i32[2]) -> (f32[], f32[2,3]) {
  %w1 = param init=xavier : f32[3,4]
  %b1 = param init=zeros : f32[4]
  %h.mm = matmul %x, %w1 : f32[2,4]
  %h = add %h.mm, %b1 : f32[2,4]
  %r = relu %h : f32[2,4]
  %w2 = param init=xavier : f32[4,3]
  %b2 = param init=zeros : f32[3]
  %logits.mm = matmul %r, %w2 : f32[2,3]
  %logits = add %logits.mm, %b2 : f32[2,3]
  %loss = cross_entropy %logits, %targets : f32[]
  return %loss, %logits
}
)";

const std::vector<float> kX = {1, 2, 0, 0, 1, -1};
const std::vector<int32_t> kTargets = {2, 0};
const std::vector<float> kW1 = {1, 0, -1, 0.5, 0, 1, 1, 0, 2, 0, 0, -1};
const std::vector<float> kB1 = {0, -1, 0.5, 0};
const std::vector<float> kW2 = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
const std::vector<float> kB2 = {0, 0, -1};
const std::vector<double> kLogits = {1.5, 1.5, 1, 1, 1, 1.5};
const double kLoss =
    0.5 * ((std::log(2 * std::exp(1.5) + std::exp(1.0)) - 1) + (std::log(2 * std::exp(1.0) + std::exp(1.5)) - 1));

template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  return DeviceBuffer(v.data(), v.size() * sizeof(T));
}

template <class T>
std::vector<T> download(const void* p, int64_t n) {
  std::vector<T> v(static_cast<size_t>(n));
  PF_CUDA_CHECK(cudaMemcpy(v.data(), p, v.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

/// The MLP's parameters and inputs on the device, bound to an executor of kMlp.
struct BoundMlp {
  DeviceBuffer x = upload(kX), t = upload(kTargets), w1 = upload(kW1), b1 = upload(kB1), w2 = upload(kW2),
               b2 = upload(kB2);
  explicit BoundMlp(Executor& ex) {
    ex.bind_param("w1", w1.get());
    ex.bind_param("b1", b1.get());
    ex.bind_param("w2", w2.get());
    ex.bind_param("b2", b2.get());
    ex.bind_input(0, x.get());
    ex.bind_input(1, t.get());
  }
};

TEST(CudaExecutor, MlpForwardMatchesHandComputedNumbers) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 1);
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), device, 0);
  const BoundMlp bound(ex);
  for (int run = 0; run < 2; ++run) {  // the second run reuses every buffer
    ex.run();
    ex.finish();
    const std::vector<float> logits = download<float>(ex.output(1), 6);
    for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(logits[i], kLogits[i], 1e-6) << "element " << i;
    EXPECT_NEAR(download<float>(ex.output(0), 1)[0], kLoss, 1e-6);
  }
  EXPECT_EQ(ex.output_type(1).str(), "f32[2,3]");
}

TEST(CudaExecutor, ResultsGoIntoBoundBuffers) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 1);
  Module m = verified_module(kMlp);
  ExecutorOptions options;
  options.caller_outputs = {1};
  Executor ex(m.graph(), m.binding(), device, 0, DType::f32, options);
  const BoundMlp bound(ex);
  DeviceBuffer out(6 * sizeof(float));
  EXPECT_THROW(ex.run(), Error);  // result 1 is the caller's and unbound
  ex.bind_output(1, out.get());
  ex.run();
  ex.finish();
  const std::vector<float> logits = download<float>(out.get(), 6);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(logits[i], kLogits[i], 1e-6);
}

TEST(CudaExecutor, AProfileTimesEveryOpOfEveryRun) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 1);
  Module m = verified_module(kMlp);
  ExecutorOptions options;
  options.profile = true;
  Executor ex(m.graph(), m.binding(), device, 0, DType::f32, options);
  const BoundMlp bound(ex);
  ex.run();
  const std::vector<backend::OpTime> once = ex.op_times();
  ex.run();
  ex.finish();
  const std::vector<backend::OpTime> twice = ex.op_times();
  // The six ops after the parameters, in run order, each timed in both runs.
  const std::vector<std::string> texts = {"matmul f32[2,3] x f32[3,4]", "add f32[2,4] x f32[4]", "relu f32[2,4]",
                                          "matmul f32[2,4] x f32[4,3]", "add f32[2,3] x f32[3]",
                                          "cross_entropy f32[2,3] x i32[2]"};
  ASSERT_EQ(twice.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(twice[i].text, texts[i]);
    EXPECT_EQ(twice[i].function, "mlp");
    EXPECT_GT(once[i].seconds, 0.0) << texts[i];
    EXPECT_GE(twice[i].seconds, once[i].seconds) << texts[i];
  }
  ex.reset_profile();
  EXPECT_TRUE(ex.op_times().empty());
  ex.set_profile(false);
  ex.run();
  ex.finish();
  EXPECT_TRUE(ex.op_times().empty());
  EXPECT_NEAR(download<float>(ex.output(0), 1)[0], kLoss, 1e-6);  // profiling changed no number
}

// The fused masked softmax and its gradient (rows held in registers, and
// rows longer than 2048) against the CPU running the same chains unfused.
std::vector<float> run_chain_on_cpu_and_gpu(const Module& m, const std::vector<std::vector<float>>& floats,
                                            const std::vector<uint8_t>& mask, int mask_arg, std::vector<float>& cpu) {
  const Function& f = m.graph();
  cpu::Executor host(f, m.binding(), DType::f32);
  CudaDevice device(0, 1);
  Executor gpu(f, m.binding(), device, 0);
  std::vector<DeviceBuffer> buffers;
  size_t next = 0;
  for (int a = 0; a < static_cast<int>(f.args.size()); ++a) {
    if (a == mask_arg) {
      host.bind_input(a, mask.data());
      buffers.push_back(upload(mask));
    } else {
      host.bind_input(a, floats[next].data());
      buffers.push_back(upload(floats[next++]));
    }
    gpu.bind_input(a, buffers.back().get());
  }
  host.run();
  const int64_t n = f.type_of(f.returns[0]).numel();
  const auto* out = static_cast<const float*>(host.output(0));
  cpu.assign(out, out + n);
  gpu.run();
  gpu.finish();
  return download<float>(gpu.output(0), n);
}

TEST(CudaExecutor, FusedMaskedSoftmaxMatchesTheUnfusedChain) {
  PF_REQUIRE_CUDA();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-3, 3);
  for (int n : {300, 3000}) {
    const std::string t = "f32[2,3," + std::to_string(n) + "]", mt = "bool[3," + std::to_string(n) + "]";
    const Module fwd = verified_module("graph @f(%s: " + t + ", %scale: f32[], %mask: " + mt + ") -> " + t + " {\n" +
                                       "  %scaled = mul %s, %scale : " + t + "\n  %minus_inf = constant value=-inf : f32[]\n" +
                                       "  %masked = where %mask, %scaled, %minus_inf : " + t + "\n" +
                                       "  %y = softmax %masked axis=-1 : " + t + "\n  return %y\n}\n");
    const Module grad = verified_module("graph @g(%g: " + t + ", %y: " + t + ", %scale: f32[], %mask: " + mt +
                                        ") -> " + t + " {\n  %d = softmax_grad %g, %y axis=-1 : " + t + "\n" +
                                        "  %zero = constant value=0 : f32[]\n  %masked = where %mask, %d, %zero : " +
                                        t + "\n  %dx = mul %masked, %scale : " + t + "\n  return %dx\n}\n");
    std::vector<float> s(static_cast<size_t>(6 * n)), g(s.size()), y(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      s[i] = u(rng);
      g[i] = u(rng);
      y[i] = std::fabs(u(rng)) / static_cast<float>(n);
    }
    std::vector<uint8_t> mask(static_cast<size_t>(3 * n));
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i % 7 != 3) ? 1 : 0;
    std::vector<float> want;
    const std::vector<float> got = run_chain_on_cpu_and_gpu(fwd, {s, {0.125f}}, mask, 2, want);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-6 + 1e-5 * std::fabs(want[i])) << n << " " << i;
    const std::vector<float> got_grad = run_chain_on_cpu_and_gpu(grad, {g, y, {0.125f}}, mask, 3, want);
    for (size_t i = 0; i < got_grad.size(); ++i)
      ASSERT_NEAR(got_grad[i], want[i], 1e-6 + 1e-5 * std::fabs(want[i])) << n << " " << i;
  }
}

TEST(CudaExecutor, AnIndexOutOfRangeNamesTheOp) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 1);
  Module m = verified_module(R"(
graph @g(%ids: i32[3]) -> f32[3,2] {
  %table = param init=zeros : f32[4,2]
  %e = embedding %table, %ids : f32[3,2]
  return %e
}
)");
  Executor ex(m.graph(), m.binding(), device, 0);
  const std::vector<float> table(8, 1.f);
  const std::vector<int32_t> ids = {0, 9, 1};
  DeviceBuffer tb = upload(table), ib = upload(ids);
  ex.bind_param("table", tb.get());
  ex.bind_input(0, ib.get());
  ex.run();
  try {
    ex.finish();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("embedding: index 9 at position 1 is out of range [0, 4)"), std::string::npos)
        << e.message();
    EXPECT_NE(e.message().find("%e = embedding"), std::string::npos) << e.message();
  }
}

// A table or logits that hold a rank's share of a vocabulary check ids
// against the whole vocabulary: 5 is another rank's id, 6 none at all.
TEST(CudaExecutor, AnIdOutsideTheVocabularyNamesTheVocabulary) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 1);
  auto expect_error = [](Executor& ex, const std::string& message, const std::string& op) {
    ex.run();
    try {
      ex.finish();
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(message), std::string::npos) << e.message();
      EXPECT_NE(e.message().find(op), std::string::npos) << e.message();
    }
  };
  const std::vector<int32_t> ids = {5, 6, 2};
  DeviceBuffer ib = upload(ids);
  {
    Module m = verified_module(R"(
graph @g(%ids: i32[3]) -> f32[3,2] {
  %table = param init=zeros : f32[2,2]
  %e = embedding %table, %ids offset=2 vocab=6 : f32[3,2]
  return %e
}
)");
    Executor ex(m.graph(), m.binding(), device, 0);
    DeviceBuffer tb = upload(std::vector<float>(4, 1.f));
    ex.bind_param("table", tb.get());
    ex.bind_input(0, ib.get());
    expect_error(ex, "embedding: index 6 at position 1 is out of range [0, 6)", "%e = embedding");
  }
  {
    Module m = verified_module(R"(
graph @g(%logits: f32[3,2], %max: f32[3], %targets: i32[3]) -> f32[3,2] {
  %p = cross_entropy_parts %logits, %max, %targets offset=2 vocab=6 : f32[3,2]
  return %p
}
)");
    Executor ex(m.graph(), m.binding(), device, 0);
    DeviceBuffer lb = upload(std::vector<float>(6, 0.5f)), mb = upload(std::vector<float>(3, 1.f));
    ex.bind_input(0, lb.get());
    ex.bind_input(1, mb.get());
    ex.bind_input(2, ib.get());
    expect_error(ex, "cross_entropy_parts: target 6 at position 1 is out of range [0, 6)", "%p = cross_entropy_parts");
  }
}

TEST(CudaDevice, ADeviceThatDoesNotExistIsAClearError) {
  // Runs with or without a GPU: the ordinal one past the last device.
  const int count = device_count();
  try {
    CudaDevice device(count, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cuda device " + std::to_string(count) + " does not exist (" + std::to_string(count) +
                               " visible)");
  }
}

}  // namespace
}  // namespace pf::cuda
