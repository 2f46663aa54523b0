// Loading cuBLAS and cuBLASLt on first use.
#include "backends/cuda/cublas_api.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <string>

#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

// By soname first (the executable's run path names the toolkit it was linked
// against), then in the toolkit this backend was built with.
void* open_library(const std::string& soname) {
  if (void* h = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  const std::string in_toolkit = std::string(PF_CUDA_LIBRARY_DIR) + "/" + soname;
  if (void* h = dlopen(in_toolkit.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  throw Error(fmt::format("cannot load {} (nor {}): {}; install the CUDA toolkit's cuBLAS or put it on the library "
                          "path",
                          soname, in_toolkit, dlerror()));
}

template <class F>
void bind(void* library, const std::string& soname, const char* name, F& out) {
  void* symbol = dlsym(library, name);
  if (symbol == nullptr) throw Error(fmt::format("{} has no {}: a cuBLAS older than this backend", soname, name));
  out = reinterpret_cast<F>(symbol);
}

CublasApi load() {
  const std::string lt_name = fmt::format("libcublasLt.so.{}", CUBLAS_VER_MAJOR);
  const std::string blas_name = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
  void* lt = open_library(lt_name);
  void* blas = open_library(blas_name);
  CublasApi api{};
  bind(blas, blas_name, "cublasCreate_v2", api.create);
  bind(blas, blas_name, "cublasDestroy_v2", api.destroy);
  bind(blas, blas_name, "cublasSetStream_v2", api.set_stream);
  bind(blas, blas_name, "cublasGetStatusString", api.status_string);
  bind(blas, blas_name, "cublasGetStatusName", api.status_name);
  bind(blas, blas_name, "cublasGemmStridedBatchedEx", api.gemm_strided_batched);
  bind(lt, lt_name, "cublasLtCreate", api.lt_create);
  bind(lt, lt_name, "cublasLtDestroy", api.lt_destroy);
  bind(lt, lt_name, "cublasLtMatmul", api.lt_matmul);
  bind(lt, lt_name, "cublasLtMatmulAlgoGetHeuristic", api.lt_heuristic);
  bind(lt, lt_name, "cublasLtMatmulDescCreate", api.lt_desc_create);
  bind(lt, lt_name, "cublasLtMatmulDescDestroy", api.lt_desc_destroy);
  bind(lt, lt_name, "cublasLtMatmulDescSetAttribute", api.lt_desc_set);
  bind(lt, lt_name, "cublasLtMatmulPreferenceCreate", api.lt_pref_create);
  bind(lt, lt_name, "cublasLtMatmulPreferenceDestroy", api.lt_pref_destroy);
  bind(lt, lt_name, "cublasLtMatmulPreferenceSetAttribute", api.lt_pref_set);
  bind(lt, lt_name, "cublasLtMatrixLayoutCreate", api.lt_layout_create);
  bind(lt, lt_name, "cublasLtMatrixLayoutDestroy", api.lt_layout_destroy);
  return api;  // the libraries stay loaded for the process's life
}

}  // namespace

const CublasApi& cublas() {
  static const CublasApi api = load();
  return api;
}

}  // namespace pf::cuda
