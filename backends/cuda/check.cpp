// One way to check every CUDA, cuBLAS, cuDNN and NCCL call: a failure throws pf::Error naming the call and where.
#include "backends/cuda/check.h"

#include <fmt/format.h>

#include <string_view>

#include "backends/cuda/cublas_api.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

thread_local const CheckScope* t_scope = nullptr;

// __FILE__ is absolute in CMake builds: keep it from the project's folders on.
std::string_view short_path(std::string_view file) {
  for (std::string_view root : {"backends/", "tests/"}) {
    const size_t at = file.rfind(root);
    if (at != std::string_view::npos) return file.substr(at);
  }
  return file;
}

[[noreturn]] void fail(std::string_view library, const char* call, const char* file, int line, std::string_view what) {
  throw Error(fmt::format("{}: {} failed at {}:{}: {}{}", library, call, short_path(file), line, what, scope_suffix()));
}

}  // namespace

CheckScope::CheckScope(std::string_view stage, std::string_view op) : stage_(stage), op_(op), outer_(t_scope) {
  t_scope = this;
}

CheckScope::~CheckScope() { t_scope = outer_; }

std::string scope_suffix() {
  if (!t_scope) return "";
  if (t_scope->stage_.empty()) return fmt::format(" [{}]", t_scope->op_);
  if (t_scope->op_.empty()) return fmt::format(" [{}]", t_scope->stage_);
  return fmt::format(" [{}, {}]", t_scope->stage_, t_scope->op_);
}

void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  // Clear the sticky "last error" of a non-sticky failure so the next check
  // does not report it again.
  (void)cudaGetLastError();
  fail("cuda", call, file, line, fmt::format("{} ({})", cudaGetErrorString(status), cudaGetErrorName(status)));
}

void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  fail("cublas", call, file, line,
       fmt::format("{} ({})", cublas().status_string(status), cublas().status_name(status)));
}

void check(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  fail("cudnn", call, file, line, cudnnGetErrorString(status));
}

void check(ncclResult_t status, const char* call, const char* file, int line) {
  if (status == ncclSuccess) return;
  // ncclInProgress only arises on non-blocking communicators, which are not used here.
  fail("nccl", call, file, line, fmt::format("{} (last: {})", ncclGetErrorString(status), ncclGetLastError(nullptr)));
}

}  // namespace pf::cuda
