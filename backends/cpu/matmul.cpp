// matmul: batched GEMM through BLAS, with transposes passed through and NumPy batch broadcasting.
#include "backends/cpu/blas.h"
#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"

#include <utility>
#include <vector>

namespace pf::cpu {

namespace {

// C = bias + op(A) op(B), or, for a kernel asked to accumulate (never with a
// bias), C += op(A) op(B).
template <class T>
void product(bool accumulate, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
             int64_t ldb, const T* bias, T* c, int64_t ldc) {
  if (accumulate)
    gemm_accumulate(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  else
    gemm_bias(ta, tb, m, n, k, a, lda, b, ldb, bias, c, ldc);
}

// a: [...a, M, K] ([..., K, M] with transpose_a), b: [...b, K, N] ([..., N, K]
// with transpose_b), result: [broadcast(...a, ...b), M, N]. A third operand,
// bias [N], is the executor's fusion of a following add (fusion.h): it starts
// every row of the result. Asked to accumulate, the product is added to the
// result (beta = 1).
template <class T>
void matmul(const KernelArgs& args) {
  const TensorType &ta_type = args.in_types[0], &tb_type = args.in_types[1];
  const Shape& out_shape = args.out_types[0].shape;
  const bool ta = args.attrs.get_bool("transpose_a", false);
  const bool tb = args.attrs.get_bool("transpose_b", false);
  const auto* a = static_cast<const T*>(args.in[0]);
  const auto* b = static_cast<const T*>(args.in[1]);
  auto* c = static_cast<T*>(args.out[0]);
  const T* bias = args.in.size() > 2 ? static_cast<const T*>(args.in[2]) : nullptr;

  const int64_t ra = ta_type.rank(), rb = tb_type.rank(), rc = args.out_types[0].rank();
  const int64_t m = out_shape[rc - 2], n = out_shape[rc - 1];
  const int64_t k = ta_type.shape[ra - (ta ? 2 : 1)];
  // Leading dimensions: the stored row lengths, whatever the transposes.
  const int64_t lda = ta_type.shape[ra - 1], ldb = tb_type.shape[rb - 1];
  const Shape batch_a(ta_type.shape.begin(), ta_type.shape.end() - 2);
  const Shape batch_b(tb_type.shape.begin(), tb_type.shape.end() - 2);
  const Shape batch_c(out_shape.begin(), out_shape.end() - 2);
  const int64_t batches = TensorType{ta_type.dtype, batch_c}.numel();
  if (batches == 0) return;

  // B shared by every batch and A's matrices stacked row after row: one GEMM
  // of [batches * M, K] x [K, N] (a linear layer on [B, T, C]), which BLAS
  // runs far better than many small ones.
  if (TensorType{tb_type.dtype, batch_b}.numel() == 1 && !ta) {
    product(args.accumulate, false, tb, batches * m, n, k, a, lda, b, ldb, bias, c, n);
    return;
  }

  // Otherwise one GEMM per result matrix; a broadcast operand's batch stride is 0.
  const Shape* batch_shapes[] = {&batch_a, &batch_b};
  const BroadcastPlan plan = plan_broadcast(batch_c, batch_shapes);
  const int64_t size_a = m * k, size_b = k * n, size_c = m * n;
  const int64_t inner = plan.dims.back(), step_a = plan.strides[0].back(), step_b = plan.strides[1].back();
  std::vector<std::pair<int64_t, int64_t>> offsets;
  offsets.reserve(batches);
  for (RowWalk w(plan); !w.done(); w.next())
    for (int64_t j = 0; j < inner; ++j) offsets.emplace_back(w.offset(0) + j * step_a, w.offset(1) + j * step_b);
  // Whole matrices per thread: small GEMMs split no further.
  parallel_for(batches, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      product(args.accumulate, ta, tb, m, n, k, a + offsets[i].first * size_a, lda, b + offsets[i].second * size_b,
              ldb, bias, c + i * size_c, n);
  });
}

}  // namespace

void add_matmul_kernels(KernelTable& table) { table.set_float(OpKind::matmul, matmul<float>, matmul<double>); }

}  // namespace pf::cpu
