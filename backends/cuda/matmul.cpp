// matmul through cuBLAS (cublasGemmStridedBatchedEx): transposes passed through, NumPy batch broadcasting, f32 (TF32 optional) and bf16;
// a linear layer with its bias (and GELU) through cuBLASLt epilogues.
#include <fmt/format.h>

#include <climits>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/cublas_api.h"
#include "backends/cuda/indexing.h"
#include "backends/cuda/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

int to_int(int64_t v, const char* what) {
  if (v > INT_MAX) throw Error(fmt::format("cuda matmul: {} {} exceeds cuBLAS's int range", what, v));
  return static_cast<int>(v);
}

// cuBLAS is column-major; a row-major matrix is its transpose. So the
// row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T
// op(A)^T: B's buffer first, A's second, the result [N, M] column-major
// being C row-major. A stored [M, K] ([K, M] with transpose_a) has leading
// dimension = its stored row length, whatever the transpose.
struct Gemm {
  cublasOperation_t op_a, op_b;
  int m, n, k, lda, ldb;
  cudaDataType type;
  cublasComputeType_t compute;

  void run(const LaunchContext& ctx, const void* a, long long stride_a, const void* b, long long stride_b, void* c,
           long long stride_c, int batches) const {
    const float alpha = 1.f, beta = 0.f;
    PF_CUDA_CHECK(cublas().gemm_strided_batched(ctx.cublas, op_b, op_a, n, m, k, &alpha, b, type, ldb, stride_b, a,
                                                type, lda, stride_a, &beta, c, type, n, stride_c, batches, compute,
                                                CUBLAS_GEMM_DEFAULT));
  }
};

void matmul(const KernelArgs& args, const LaunchContext& ctx);

// A cuBLASLt descriptor destroyed with its owner.
template <class H>
struct LtHandle {
  explicit LtHandle(cublasStatus_t (*destroy_with)(H)) : destroy(destroy_with) {}
  LtHandle(const LtHandle&) = delete;
  LtHandle& operator=(const LtHandle&) = delete;
  ~LtHandle() {
    if (h) (void)destroy(h);
  }
  H h = nullptr;
  cublasStatus_t (*destroy)(H);
};

// Bytes of scratch cuBLASLt may use for its algorithms.
constexpr size_t kLtWorkspace = size_t{32} << 20;

// x [..., K] times w [K, N] plus bias [N] (and GELU, tanh form), as one
// cuBLASLt GEMM whose epilogue adds the bias (and applies the GELU) where
// it writes the result [..., N]. Column-major, as for cuBLAS above: the
// result's transpose [N, rows] is w^T [N, K] times x^T [K, rows], and the
// bias runs along its rows.
void matmul_epilogue(const KernelArgs& args, const LaunchContext& ctx, bool gelu) {
  const TensorType &x = args.in_types[0], &w = args.in_types[1], &out = args.out_types[0];
  if (w.rank() != 2 || args.attrs.get_bool("transpose_a", false) || args.attrs.get_bool("transpose_b", false))
    throw Error(fmt::format("cuda matmul with a bias: needs x [..., K] and w [K, N] untransposed, got {} and {}",
                            x.str(), w.str()));
  if (out.numel() == 0) return;
  const int k = to_int(w.shape[0], "K"), n = to_int(w.shape[1], "N");
  const int rows = to_int(out.numel() / out.shape.back(), "rows");
  const bool bf16 = out.dtype == DType::bf16;
  const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = bf16 || !ctx.allow_tf32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;

  const CublasApi& lt = cublas();
  LtHandle<cublasLtMatmulDesc_t> op(lt.lt_desc_destroy);
  PF_CUDA_CHECK(lt.lt_desc_create(&op.h, compute, CUDA_R_32F));
  const cublasLtEpilogue_t epilogue = gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  const void* bias = args.in[2];
  PF_CUDA_CHECK(lt.lt_desc_set(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  PF_CUDA_CHECK(lt.lt_desc_set(op.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  PF_CUDA_CHECK(lt.lt_desc_set(op.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof type));
  LtHandle<cublasLtMatrixLayout_t> wl(lt.lt_layout_destroy), xl(lt.lt_layout_destroy), yl(lt.lt_layout_destroy);
  PF_CUDA_CHECK(lt.lt_layout_create(&wl.h, type, n, k, n));     // w^T: [N, K], column-major
  PF_CUDA_CHECK(lt.lt_layout_create(&xl.h, type, k, rows, k));  // x^T: [K, rows]
  PF_CUDA_CHECK(lt.lt_layout_create(&yl.h, type, n, rows, n));  // result^T: [N, rows]
  LtHandle<cublasLtMatmulPreference_t> pref(lt.lt_pref_destroy);
  PF_CUDA_CHECK(lt.lt_pref_create(&pref.h));
  const size_t workspace_bytes = kLtWorkspace;
  PF_CUDA_CHECK(
      lt.lt_pref_set(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  PF_CUDA_CHECK(lt.lt_heuristic(ctx.cublaslt, op.h, wl.h, xl.h, yl.h, yl.h, pref.h, 1, &heuristic, &found));
  if (found == 0) {
    // No epilogue algorithm for these sizes: the plain GEMM, then the bias
    // add and the GELU in place, as the unfused ops would run.
    const std::span<const TensorType> xw = args.in_types.first(2);
    matmul(KernelArgs{xw, args.in.first(2), args.out_types, args.out, args.attrs}, ctx);
    const TensorType both[] = {out, args.in_types[2]};
    const void* add_in[] = {args.out[0], args.in[2]};
    const OpAttrs none;
    forward_kernel(OpKind::add, out.dtype)(KernelArgs{both, add_in, args.out_types, args.out, none}, ctx);
    if (gelu) {
      const void* gelu_in[] = {args.out[0]};
      forward_kernel(OpKind::gelu, out.dtype)(KernelArgs{args.out_types, gelu_in, args.out_types, args.out, none}, ctx);
    }
    return;
  }
  void* workspace = ctx.scratch(kLtWorkspace);
  const float alpha = 1.f, beta = 0.f;
  PF_CUDA_CHECK(lt.lt_matmul(ctx.cublaslt, op.h, &alpha, args.in[1], wl.h, args.in[0], xl.h, &beta, args.out[0], yl.h,
                             args.out[0], yl.h, &heuristic.algo, workspace, kLtWorkspace, ctx.stream));
}

void matmul_bias_gelu(const KernelArgs& args, const LaunchContext& ctx) { matmul_epilogue(args, ctx, true); }

// a: [...a, M, K] ([..., K, M] with transpose_a), b: [...b, K, N] ([..., N, K]
// with transpose_b), result: [broadcast(...a, ...b), M, N]. A third operand
// is a bias [N] the executor folded in (gemm_fusion.h): cuBLASLt adds it.
void matmul(const KernelArgs& args, const LaunchContext& ctx) {
  if (args.in.size() > 2) {
    matmul_epilogue(args, ctx, false);
    return;
  }
  const TensorType &ta_type = args.in_types[0], &tb_type = args.in_types[1];
  const TensorType& out = args.out_types[0];
  const bool ta = args.attrs.get_bool("transpose_a", false), tb = args.attrs.get_bool("transpose_b", false);
  const int64_t ra = ta_type.rank(), rb = tb_type.rank(), rc = out.rank();
  const int64_t m = out.shape[rc - 2], n = out.shape[rc - 1];
  const int64_t k = ta_type.shape[ra - (ta ? 2 : 1)];
  const Shape batch_a(ta_type.shape.begin(), ta_type.shape.end() - 2);
  const Shape batch_b(tb_type.shape.begin(), tb_type.shape.end() - 2);
  const Shape batch_c(out.shape.begin(), out.shape.end() - 2);
  const int64_t batches = TensorType{out.dtype, batch_c}.numel();
  if (out.numel() == 0) return;
  if (k == 0) {  // an empty sum: zeros, without asking cuBLAS about k = 0
    PF_CUDA_CHECK(cudaMemsetAsync(args.out[0], 0, static_cast<size_t>(out.bytes()), ctx.stream));
    return;
  }
  const bool bf16 = out.dtype == DType::bf16;
  Gemm gemm{ta ? CUBLAS_OP_T : CUBLAS_OP_N,
            tb ? CUBLAS_OP_T : CUBLAS_OP_N,
            to_int(m, "M"),
            to_int(n, "N"),
            to_int(k, "K"),
            to_int(ta_type.shape[ra - 1], "lda"),
            to_int(tb_type.shape[rb - 1], "ldb"),
            bf16 ? CUDA_R_16BF : CUDA_R_32F,
            bf16 || !ctx.allow_tf32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32};
  const int64_t es = dtype_size(out.dtype);
  const auto* a = static_cast<const char*>(args.in[0]);
  const auto* b = static_cast<const char*>(args.in[1]);
  auto* c = static_cast<char*>(args.out[0]);

  // B shared by every batch and A's matrices stacked row after row: one GEMM
  // of [batches * M, K] x [K, N] (a linear layer on [B, T, C]).
  if (TensorType{tb_type.dtype, batch_b}.numel() == 1 && !ta) {
    Gemm one = gemm;
    one.m = to_int(batches * m, "batches * M");
    one.run(ctx, a, 0, b, 0, c, 0, 1);
    return;
  }

  // Otherwise the innermost merged batch dimension is one strided-batched
  // call (a broadcast operand has stride 0 there) and the outer ones loop.
  const Shape* shapes[] = {&batch_a, &batch_b};
  const StridedPlan plan = plan_broadcast(batch_c, shapes);
  const int last = plan.rank - 1;
  const int64_t inner = plan.dims[last];
  const int64_t size_a = m * k, size_b = k * n, size_c = m * n;
  int64_t outer = 1;
  for (int d = 0; d < last; ++d) outer *= plan.dims[d];
  std::vector<int64_t> index(static_cast<size_t>(plan.rank), 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t off_a = 0, off_b = 0;
    for (int d = 0; d < last; ++d) {
      off_a += index[d] * plan.strides[0][d];
      off_b += index[d] * plan.strides[1][d];
    }
    gemm.run(ctx, a + off_a * size_a * es, plan.strides[0][last] * size_a, b + off_b * size_b * es,
             plan.strides[1][last] * size_b, c + o * inner * size_c * es, size_c, to_int(inner, "batch count"));
    // Next outer index, innermost first.
    for (int d = last - 1; d >= 0; --d) {
      if (++index[d] < plan.dims[d]) break;
      index[d] = 0;
    }
  }
}

}  // namespace

void add_matmul_kernels(KernelTable& t) { t.set_float(OpKind::matmul, matmul, matmul); }

Kernel matmul_bias_gelu_kernel(DType dtype) {
  if (dtype == DType::f32 || dtype == DType::bf16) return matmul_bias_gelu;
  throw Error(fmt::format("no cuda kernel for matmul with bias and gelu in {}", dtype_name(dtype)));
}

}  // namespace pf::cuda
