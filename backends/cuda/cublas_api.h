// cuBLAS and cuBLASLt, loaded when a CUDA device first needs them. Linked
// like the CUDA runtime, their static initialisers ran at every start of
// every program with the CUDA backend, a GPU or not: 0.3 s of page faults in
// libcublasLt on a 2-core CPU machine, for each of the hundreds of times the
// tests start the command line.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

namespace pf::cuda {

/// The entry points the backend calls, by what they do.
struct CublasApi {
  decltype(&cublasCreate) create;
  decltype(&cublasDestroy) destroy;
  decltype(&cublasSetStream) set_stream;
  decltype(&cublasGetStatusString) status_string;
  decltype(&cublasGetStatusName) status_name;
  // The C entry point (the header overloads it for C++ callers).
  cublasStatus_t (*gemm_strided_batched)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                         const void*, const void*, cudaDataType, int, long long int, const void*,
                                         cudaDataType, int, long long int, const void*, void*, cudaDataType, int,
                                         long long int, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasLtCreate) lt_create;
  decltype(&cublasLtDestroy) lt_destroy;
  decltype(&cublasLtMatmul) lt_matmul;
  decltype(&cublasLtMatmulAlgoGetHeuristic) lt_heuristic;
  decltype(&cublasLtMatmulDescCreate) lt_desc_create;
  decltype(&cublasLtMatmulDescDestroy) lt_desc_destroy;
  decltype(&cublasLtMatmulDescSetAttribute) lt_desc_set;
  decltype(&cublasLtMatmulPreferenceCreate) lt_pref_create;
  decltype(&cublasLtMatmulPreferenceDestroy) lt_pref_destroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) lt_pref_set;
  decltype(&cublasLtMatrixLayoutCreate) lt_layout_create;
  decltype(&cublasLtMatrixLayoutDestroy) lt_layout_destroy;
};

/// The libraries' entry points, loaded on the first call (thread-safe);
/// throws pf::Error naming the library or the symbol that is missing.
const CublasApi& cublas();

}  // namespace pf::cuda
