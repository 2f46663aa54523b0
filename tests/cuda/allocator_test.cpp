// The caching allocator: its bookkeeping on host memory (runs everywhere), then on a device; and the checked-call errors.
#include "backends/cuda/allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "backends/cuda/check.h"
#include "backends/cuda/cublas_api.h"
#include "ir/diagnostic.h"
#include "tests/cuda/cuda_test_util.h"

namespace pf::cuda {
namespace {

// A raw allocator over malloc with a byte budget, counting its calls.
struct HostBackend {
  int64_t budget = int64_t{1} << 40;
  int64_t used = 0;
  int allocs = 0, frees = 0;
  std::map<void*, size_t> live;  // block -> bytes

  static void* allocate(size_t bytes, void* user) {
    auto* self = static_cast<HostBackend*>(user);
    if (self->used + static_cast<int64_t>(bytes) > self->budget) return nullptr;
    void* p = std::malloc(bytes);
    self->used += static_cast<int64_t>(bytes);
    ++self->allocs;
    self->live[p] = bytes;
    return p;
  }
  static void release(void* p, void* user) {
    auto* self = static_cast<HostBackend*>(user);
    ++self->frees;
    self->used -= static_cast<int64_t>(self->live.at(p));
    self->live.erase(p);
    std::free(p);
  }
  RawAllocator raw() { return {allocate, release, this}; }
};

// Distinct stream keys (any address will do on the host).
const int kStreamA = 0, kStreamB = 0;
const void* const a_stream = &kStreamA;
const void* const b_stream = &kStreamB;

TEST(CachingAllocator, SizeClasses) {
  EXPECT_EQ(CachingAllocator::size_class(0), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(1 << 20), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::size_class((1 << 20) + 1), size_t{2} << 20);
  EXPECT_EQ(CachingAllocator::size_class((5 << 20) + 7), size_t{6} << 20);
}

TEST(CachingAllocator, SteadyStateMakesNoRawAllocations) {
  HostBackend backend;
  CachingAllocator alloc(backend.raw());
  for (int step = 0; step < 5; ++step) {
    void* a = alloc.allocate(1000, a_stream);
    void* b = alloc.allocate(3 << 20, a_stream);
    void* c = alloc.allocate(1000, a_stream);
    EXPECT_NE(a, c);
    alloc.deallocate(a);
    alloc.deallocate(b);
    alloc.deallocate(c);
  }
  EXPECT_EQ(backend.allocs, 3);  // the first step only
  const CachingAllocator::Stats s = alloc.stats();
  EXPECT_EQ(s.raw_allocations, 3);
  EXPECT_EQ(s.reuses, 12);
  EXPECT_EQ(s.bytes_in_use, 0);
  EXPECT_EQ(s.bytes_cached, 2 * 1024 + (4 << 20));
}

TEST(CachingAllocator, BlocksAreReusedOnlyOnTheirStream) {
  HostBackend backend;
  CachingAllocator alloc(backend.raw());
  void* a = alloc.allocate(100, a_stream);
  alloc.deallocate(a);
  void* b = alloc.allocate(100, b_stream);
  EXPECT_NE(a, b);  // a may still be read by work queued on stream A
  void* a2 = alloc.allocate(100, a_stream);
  EXPECT_EQ(a, a2);
  alloc.deallocate(b);
  alloc.deallocate(a2);
}

TEST(CachingAllocator, OutOfMemoryReleasesTheCacheAndRetries) {
  HostBackend backend;
  backend.budget = 3 << 20;
  CachingAllocator alloc(backend.raw());
  alloc.deallocate(alloc.allocate(2 << 20, a_stream));  // cached, 2 MiB of the budget
  void* p = alloc.allocate(2 << 20, b_stream);          // fits only once the cache is released
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(backend.frees, 1);
  EXPECT_EQ(alloc.stats().bytes_cached, 0);
  try {
    alloc.allocate(2 << 20, a_stream);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "out of device memory: allocating 2097152 bytes (class 2097152) with 2097152 bytes in use");
  }
  alloc.deallocate(p);
}

TEST(CachingAllocator, FreeingAForeignPointerIsAnError) {
  HostBackend backend;
  CachingAllocator alloc(backend.raw());
  void* p = alloc.allocate(10, a_stream);
  alloc.deallocate(p);
  EXPECT_THROW(alloc.deallocate(p), Error);
  alloc.deallocate(nullptr);  // ignored
}

TEST(CachingAllocator, DestructionReleasesTheCache) {
  HostBackend backend;
  {
    CachingAllocator alloc(backend.raw());
    alloc.deallocate(alloc.allocate(10, a_stream));
    alloc.deallocate(alloc.allocate(5000, b_stream));
  }
  EXPECT_TRUE(backend.live.empty());
}

TEST(CachingAllocator, OnADeviceSteadyStepsDoNotCallCudaMalloc) {
  PF_REQUIRE_CUDA();
  CudaDevice device(0, 2);
  for (int step = 0; step < 3; ++step) {
    void* a = device.allocate(1 << 20, 0);
    void* b = device.allocate(100, 1);
    PF_CUDA_CHECK(cudaMemsetAsync(a, 0, 1 << 20, device.stream(0)));
    device.deallocate(a);
    device.deallocate(b);
  }
  device.synchronize(0);
  EXPECT_EQ(device.allocator().stats().raw_allocations, 2);  // the stages' workspaces allocate only when asked
}

// ---------------------------------------------------------------------------
// Checked calls (host-only: the status is made up, no device is touched).

TEST(CudaCheck, AFailedCallNamesItselfWhereAndWhat) {
  try {
    PF_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string& m = e.message();
    EXPECT_EQ(m.rfind("cuda: cudaErrorInvalidValue failed at tests/cuda/allocator_test.cpp:", 0), 0u) << m;
    EXPECT_NE(m.find("(cudaErrorInvalidValue)"), std::string::npos) << m;
  }
}

TEST(CudaCheck, CublasIsLoadedOnFirstUseWithEveryEntryPoint) {
  // No GPU needed: the libraries load, and every entry point is found.
  const CublasApi& api = cublas();
  const bool found[] = {api.create != nullptr,
                        api.destroy != nullptr,
                        api.set_stream != nullptr,
                        api.status_string != nullptr,
                        api.status_name != nullptr,
                        api.gemm_strided_batched != nullptr,
                        api.lt_create != nullptr,
                        api.lt_destroy != nullptr,
                        api.lt_matmul != nullptr,
                        api.lt_heuristic != nullptr,
                        api.lt_desc_create != nullptr,
                        api.lt_desc_destroy != nullptr,
                        api.lt_desc_set != nullptr,
                        api.lt_pref_create != nullptr,
                        api.lt_pref_destroy != nullptr,
                        api.lt_pref_set != nullptr,
                        api.lt_layout_create != nullptr,
                        api.lt_layout_destroy != nullptr};
  for (bool f : found) EXPECT_TRUE(f);
  EXPECT_STREQ(api.status_name(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
  EXPECT_EQ(&cublas(), &api);  // loaded once
}

TEST(CudaCheck, ScopesNameTheStageAndTheOp) {
  CheckScope scope("stage 1 on cuda:0", "%y = matmul %x, %w : f32[2,4]");
  try {
    PF_CUDA_CHECK(CUBLAS_STATUS_NOT_SUPPORTED);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message().rfind("cublas: CUBLAS_STATUS_NOT_SUPPORTED failed at tests/cuda/", 0), 0u) << e.message();
    EXPECT_NE(e.message().find(" [stage 1 on cuda:0, %y = matmul %x, %w : f32[2,4]]"), std::string::npos)
        << e.message();
  }
  EXPECT_NO_THROW(PF_CUDA_CHECK(cudaSuccess));
  EXPECT_THROW(PF_CUDA_CHECK(CUDNN_STATUS_BAD_PARAM), Error);
  EXPECT_THROW(PF_CUDA_CHECK(ncclInvalidArgument), Error);
}

TEST(CudaCheck, AvailabilityGivesAReasonWhenFalse) {
  std::string why;
  if (cuda_available(&why)) {
    EXPECT_GT(device_count(), 0);
  } else {
    EXPECT_FALSE(why.empty());
    EXPECT_EQ(device_count(), 0);
  }
}

}  // namespace
}  // namespace pf::cuda
