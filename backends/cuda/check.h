// One way to check every CUDA, cuBLAS, cuDNN and NCCL call: a failure throws pf::Error naming the call and where.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <nccl.h>

#include <string>
#include <string_view>

namespace pf::cuda {

/// Throw pf::Error when `status` is a failure: "cuda: <call> failed at
/// <file>:<line>: <library's message> (<code name>)", followed by
/// " [stage S, op O]" when a CheckScope is active on this thread.
void check(cudaError_t status, const char* call, const char* file, int line);
void check(cublasStatus_t status, const char* call, const char* file, int line);
void check(cudnnStatus_t status, const char* call, const char* file, int line);
void check(ncclResult_t status, const char* call, const char* file, int line);

/// Names the stage and the op that the calls made on this thread while it
/// lives belong to, so that a failing call says what it was doing. Scopes
/// nest; the innermost one is reported. The strings are not copied (an
/// executor sets a scope per op per run without allocating): they must
/// outlive the scope.
class CheckScope {
 public:
  CheckScope(std::string_view stage, std::string_view op);
  ~CheckScope();
  CheckScope(const CheckScope&) = delete;
  CheckScope& operator=(const CheckScope&) = delete;

 private:
  std::string_view stage_, op_;
  const CheckScope* outer_;
  friend std::string scope_suffix();
};

/// " [stage S, op O]" for the innermost active scope, "" without one.
std::string scope_suffix();

}  // namespace pf::cuda

/// Checks the status `call` returns; the macro keeps the call's text, file and line.
#define PF_CUDA_CHECK(call) ::pf::cuda::check((call), #call, __FILE__, __LINE__)
/// After a kernel launch: launch errors (bad configuration) are reported by
/// cudaGetLastError, not by the launch itself.
#define PF_CUDA_CHECK_LAUNCH() ::pf::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
