// Data movement by row copies (reshape, slice, concat, split, slice_grad), embedding and its gradient, and the losses (f32 and bf16).
#include <cstdint>
#include <string>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"

namespace pf::cuda {

namespace {

// ---------------------------------------------------------------------------
// Row copies: `rows` runs of `cols` elements from a source with row pitch
// `sp` to a destination with row pitch `dp` (pitches in elements). Slices,
// concatenations and splits along any axis are all this, with [outer, n *
// inner] views. Only bytes move, so one instantiation per element width.

template <class E>
__global__ void copy_rows_kernel(const E* src, int64_t sp, E* dst, int64_t dp, int64_t rows, int64_t cols) {
  PF_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, c = i - r * cols;
    dst[r * dp + c] = src[r * sp + c];
  }
}

void copy_rows(const void* src, int64_t sp, void* dst, int64_t dp, int64_t rows, int64_t cols, DType t,
               cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const unsigned blocks = blocks_for(rows * cols);
  switch (dtype_size(t)) {
    case 1:
      copy_rows_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint8_t*>(src), sp,
                                                          static_cast<uint8_t*>(dst), dp, rows, cols);
      break;
    case 2:
      copy_rows_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), sp,
                                                          static_cast<uint16_t*>(dst), dp, rows, cols);
      break;
    case 4:
      copy_rows_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint32_t*>(src), sp,
                                                          static_cast<uint32_t*>(dst), dp, rows, cols);
      break;
    default:
      copy_rows_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint64_t*>(src), sp,
                                                          static_cast<uint64_t*>(dst), dp, rows, cols);
      break;
  }
  PF_CUDA_CHECK_LAUNCH();
}

const char* at_element(const void* p, int64_t elements, DType t) {
  return static_cast<const char*>(p) + elements * dtype_size(t);
}
char* at_element(void* p, int64_t elements, DType t) { return static_cast<char*>(p) + elements * dtype_size(t); }

// A reshape keeps the row-major order: one copy (the executor aliases instead where it can).
void reshape(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t bytes = args.out_types[0].bytes();
  if (bytes > 0)
    PF_CUDA_CHECK(cudaMemcpyAsync(args.out[0], args.in[0], static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                  ctx.stream));
}

void slice(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[0];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", 0), t.rank()));
  const int64_t start = args.attrs.get_int("start", 0), end = args.attrs.get_int("end", 0);
  copy_rows(at_element(args.in[0], start * s.inner, t.dtype), s.n * s.inner, args.out[0], (end - start) * s.inner,
            s.outer, (end - start) * s.inner, t.dtype, ctx.stream);
}

void concat(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.out_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const AxisSplit s = split_at_axis(t.shape, axis);
  int64_t at = 0;  // columns of the [outer, n * inner] view written so far
  for (size_t i = 0; i < args.in.size(); ++i) {
    const int64_t cols = args.in_types[i].shape[axis] * s.inner;
    copy_rows(args.in[i], cols, at_element(args.out[0], at, t.dtype), s.n * s.inner, s.outer, cols, t.dtype,
              ctx.stream);
    at += cols;
  }
}

void split(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const AxisSplit s = split_at_axis(t.shape, axis);
  int64_t at = 0;
  for (size_t i = 0; i < args.out.size(); ++i) {
    const int64_t cols = args.out_types[i].shape[axis] * s.inner;
    copy_rows(at_element(args.in[0], at, t.dtype), s.n * s.inner, args.out[i], cols, s.outer, cols, t.dtype,
              ctx.stream);
    at += cols;
  }
}

// slice_grad: g placed at `start` along `axis` in zeros (all-zero bytes are 0
// in every dtype).
void slice_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType &g = args.in_types[0], &t = args.out_types[0];
  const int64_t axis = normalize_axis(args.attrs.get_int("axis", 0), t.rank());
  const AxisSplit s = split_at_axis(t.shape, axis);
  const int64_t start = args.attrs.get_int("start", 0);
  if (t.bytes() > 0) PF_CUDA_CHECK(cudaMemsetAsync(args.out[0], 0, static_cast<size_t>(t.bytes()), ctx.stream));
  const int64_t cols = g.shape[axis] * s.inner;
  copy_rows(args.in[0], cols, at_element(args.out[0], start * s.inner, t.dtype), s.n * s.inner, s.outer, cols, t.dtype,
            ctx.stream);
}

// ---------------------------------------------------------------------------
// embedding: rows gathered from a (V, C) table; embedding_grad: their
// scatter-add with atomicAdd (so the order of the additions into a row that
// several ids name varies from run to run: results agree to rounding, not
// bit for bit). An id out of range is reported and its row left 0. The
// losses and embedding_grad below read and write T (float or bf16) and
// compute in float.
//
// Under tensor parallelism a table (or a rank's logits) holds only the rows
// offset..offset+held of the vocabulary: ids are checked against the whole
// vocabulary, and those another rank holds gather zeros and scatter nowhere.

struct VocabShare {
  int64_t offset, held, vocab;

  // The row of a checked id here, or -1 where another rank holds it.
  __device__ int64_t local(int64_t id) const {
    const int64_t k = id - offset;
    return k >= 0 && k < held ? k : -1;
  }
};

// By default (no attributes) the rows are the whole vocabulary.
VocabShare vocab_share(const OpAttrs& attrs, int64_t held) {
  const int64_t offset = attrs.get_int("offset", 0);
  return {offset, held, attrs.get_int("vocab", offset + held)};
}

template <class T>
__global__ void embedding_kernel(const T* table, VocabShare share, int64_t c, const void* ids, bool ids64, int64_t n,
                                 T* out, DeviceErrorSlot* errors, int step) {
  PF_GRID_STRIDE(f, n * c) {
    const int64_t i = f / c, j = f - i * c;
    const int64_t id = load_index(ids, ids64, i);
    if (id < 0 || id >= share.vocab) {
      if (j == 0) report_error(errors, kEmbeddingIndex, step, i, id, share.vocab);
      out[f] = from_float<T>(0.f);
    } else {
      const int64_t k = share.local(id);
      out[f] = k < 0 ? from_float<T>(0.f) : table[k * c + j];
    }
  }
}

template <class T>
void embedding(const KernelArgs& args, const LaunchContext& ctx) {
  const VocabShare share = vocab_share(args.attrs, args.in_types[0].shape[0]);
  const int64_t c = args.in_types[0].shape[1];
  const int64_t n = args.in_types[1].numel();
  if (n * c == 0) return;
  embedding_kernel<T><<<blocks_for(n * c), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), share, c, args.in[1], args.in_types[1].dtype == DType::i64, n,
      static_cast<T*>(args.out[0]), ctx.errors, ctx.step);
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
__global__ void embedding_grad_kernel(const T* g, int64_t c, const void* ids, bool ids64, int64_t n, VocabShare share,
                                      float* table, DeviceErrorSlot* errors, int step) {
  PF_GRID_STRIDE(f, n * c) {
    const int64_t i = f / c, j = f - i * c;
    const int64_t id = load_index(ids, ids64, i);
    if (id < 0 || id >= share.vocab) {
      if (j == 0) report_error(errors, kEmbeddingGradIndex, step, i, id, share.vocab);
    } else {
      const int64_t k = share.local(id);
      if (k >= 0) atomicAdd(table + k * c + j, to_float(g[f]));
    }
  }
}

template <class T>
__global__ void store_floats_kernel(const float* x, T* y, int64_t n) {
  PF_GRID_STRIDE(i, n) y[i] = from_float<T>(x[i]);
}

// A bf16 table is summed in a float one in scratch and rounded once at the
// end: bf16 atomics would round after every addition into a row.
template <class T>
void embedding_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const VocabShare share = vocab_share(args.attrs, args.out_types[0].shape[0]);
  const int64_t c = args.out_types[0].shape[1];
  const int64_t n = args.in_types[1].numel();
  const int64_t elements = share.held * c;
  constexpr bool kFloat = std::is_same_v<T, float>;
  auto* table = kFloat ? reinterpret_cast<float*>(args.out[0])
                       : static_cast<float*>(ctx.scratch(static_cast<size_t>(elements) * sizeof(float)));  // (held, C)
  if (elements > 0)
    PF_CUDA_CHECK(cudaMemsetAsync(table, 0, static_cast<size_t>(elements) * sizeof(float), ctx.stream));
  if (n * c > 0) {
    embedding_grad_kernel<T><<<blocks_for(n * c), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(args.in[0]), c, args.in[1], args.in_types[1].dtype == DType::i64, n, share, table,
        ctx.errors, ctx.step);
    PF_CUDA_CHECK_LAUNCH();
  }
  if (!kFloat && elements > 0) {
    store_floats_kernel<T><<<blocks_for(elements), kThreads, 0, ctx.stream>>>(table, static_cast<T*>(args.out[0]),
                                                                               elements);
    PF_CUDA_CHECK_LAUNCH();
  }
}

// ---------------------------------------------------------------------------
// Losses. Sums over rows go through per-row values in scratch and one block
// that adds them in double, in a fixed order: deterministic, and as precise
// as the CPU's double totals.

constexpr int kSumThreads = 512;

// out[0] = (sum a) / (sum b), or 0 when sum b is 0 (b null: divide by `count`).
template <class T>
__global__ void mean_of_sums_kernel(const float* a, const float* b, int64_t n, double count, T* out) {
  __shared__ double sa[kSumThreads], sb[kSumThreads];
  double ta = 0, tb = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    ta += a[i];
    if (b) tb += b[i];
  }
  sa[threadIdx.x] = ta;
  sb[threadIdx.x] = tb;
  __syncthreads();
  for (int w = kSumThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) {
      sa[threadIdx.x] += sa[threadIdx.x + w];
      sb[threadIdx.x] += sb[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double d = b ? sb[0] : count;
    out[0] = from_float<T>(d == 0 ? 0.f : static_cast<float>(sa[0] / d));
  }
}

// Per row: the negative log-likelihood of its target and whether it counts.
// -log_softmax(row)[t] = log(sum(exp(row - max))) + max - row[t].
template <class T>
__global__ void cross_entropy_rows_kernel(const T* logits, const void* targets, bool t64, int64_t rows, int64_t v,
                                          int64_t ignore, float* nll, float* counted, DeviceErrorSlot* errors,
                                          int step) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = load_index(targets, t64, r);
    if (t == ignore || t < 0 || t >= v) {
      if (threadIdx.x == 0) {
        if (t != ignore) report_error(errors, kCrossEntropyTarget, step, r, t, v);
        nll[r] = 0.f;
        counted[r] = 0.f;
      }
      continue;  // uniform across the block: t is the same for every thread
    }
    const T* row = logits + r * v;
    const float2 ms = row_max_and_exp_sum([&](int64_t i) { return to_float(row[i]); }, v, shared);
    const float m = ms.x, s = ms.y;
    if (threadIdx.x == 0) {
      nll[r] = static_cast<float>(log(static_cast<double>(s)) + static_cast<double>(m) -
                                  static_cast<double>(to_float(row[t])));
      counted[r] = 1.f;
    }
  }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(rows < 65536 ? rows : 65536); }

template <class T>
void cross_entropy(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t v = args.in_types[0].shape.back();
  const int64_t rows = args.in_types[1].numel();
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  auto* per_row = static_cast<float*>(ctx.scratch(static_cast<size_t>(2 * rows) * sizeof(float)));  // nll, counted
  if (rows > 0) {
    cross_entropy_rows_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(args.in[0]), args.in[1], args.in_types[1].dtype == DType::i64, rows, v, ignore, per_row,
        per_row + rows, ctx.errors, ctx.step);
    PF_CUDA_CHECK_LAUNCH();
  }
  mean_of_sums_kernel<T><<<1, kSumThreads, 0, ctx.stream>>>(per_row, per_row + rows, rows, 0,
                                                            static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// The number of counted targets (as a float, exact to 2^24 rows), with
// targets out of range [0, v) reported as `range_error`; kNoDeviceError
// counts every target but ignore_index unchecked (cross_entropy_total's
// gradient, which knows no vocabulary).
__global__ void count_targets_kernel(const void* targets, bool t64, int64_t rows, int64_t v, int64_t ignore,
                                     unsigned long long range_error, float* count, DeviceErrorSlot* errors, int step) {
  __shared__ float shared[32];
  float c = 0.f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t t = load_index(targets, t64, r);
    if (t == ignore) continue;
    if (range_error != kNoDeviceError && (t < 0 || t >= v))
      report_error(errors, range_error, step, r, t, v);
    else
      c += 1.f;
  }
  c = block_sum(c, shared);
  if (threadIdx.x == 0) *count = c;
}

// Per counted row: g / count * (softmax(row) - onehot(t)); other rows 0.
template <class T>
__global__ void cross_entropy_grad_kernel(const T* g, const float* count, const T* logits, const void* targets,
                                          bool t64, int64_t rows, int64_t v, int64_t ignore, T* dx) {
  __shared__ float shared[32];
  const float scale =
      *count == 0.f ? 0.f : static_cast<float>(static_cast<double>(to_float(*g)) / static_cast<double>(*count));
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = load_index(targets, t64, r);
    const T* row = logits + r * v;
    T* d = dx + r * v;
    if (t == ignore || t < 0 || t >= v) {
      for (int64_t i = threadIdx.x; i < v; i += blockDim.x) d[i] = from_float<T>(0.f);
      continue;
    }
    const float2 ms = row_max_and_exp_sum([&](int64_t i) { return to_float(row[i]); }, v, shared);
    const float m = ms.x;
    const float r_scale = scale / ms.y;
    for (int64_t i = threadIdx.x; i < v; i += blockDim.x) {
      const float p = expf(to_float(row[i]) - m) * r_scale;
      d[i] = from_float<T>(i == t ? p - scale : p);
    }
  }
}

template <class T>
void cross_entropy_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t v = args.in_types[1].shape.back();
  const int64_t rows = args.in_types[2].numel();
  if (rows == 0) return;
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  const bool t64 = args.in_types[2].dtype == DType::i64;
  auto* count = static_cast<float*>(ctx.scratch(sizeof(float)));
  count_targets_kernel<<<1, kThreads, 0, ctx.stream>>>(args.in[2], t64, rows, v, ignore, kCrossEntropyGradTarget, count,
                                                       ctx.errors, ctx.step);
  PF_CUDA_CHECK_LAUNCH();
  cross_entropy_grad_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), count, static_cast<const T*>(args.in[1]), args.in[2], t64, rows, v, ignore,
      static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// The cross-entropy of logits whose classes are shared over a tensor-parallel
// group, in the halves that meet around the group's sum (ir/ops.def):
// cross_entropy_parts gives per row [sum exp(logit - max), target logit -
// max] over this rank's classes, with max the group's (tp_max), and
// cross_entropy_total the mean of log(sum) - target logit over the counted
// rows of the summed parts.

// Per row (one block): the sum of exponentials and the target's shifted
// logit, 0 where another rank holds the target or it is ignored. A target
// outside the vocabulary is reported; its row still gets a sum.
template <class T>
__global__ void cross_entropy_parts_kernel(const T* logits, const T* max, const void* targets, bool t64, int64_t rows,
                                           VocabShare share, int64_t ignore, T* out, DeviceErrorSlot* errors,
                                           int step) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * share.held;
    const float m = to_float(max[r]);
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < share.held; i += blockDim.x) s += expf(to_float(row[i]) - m);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) {
      const int64_t t = load_index(targets, t64, r);
      const bool checked = t != ignore && t >= 0 && t < share.vocab;
      if (t != ignore && !checked) report_error(errors, kCrossEntropyPartsTarget, step, r, t, share.vocab);
      const int64_t k = checked ? share.local(t) : -1;
      out[2 * r] = from_float<T>(s);
      out[2 * r + 1] = from_float<T>(k < 0 ? 0.f : to_float(row[k]) - m);
    }
  }
}

template <class T>
void cross_entropy_parts(const KernelArgs& args, const LaunchContext& ctx) {
  const VocabShare share = vocab_share(args.attrs, args.in_types[0].shape.back());
  const int64_t rows = args.in_types[2].numel();
  if (rows == 0) return;
  cross_entropy_parts_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), args.in[2],
      args.in_types[2].dtype == DType::i64, rows, share, args.attrs.get_int("ignore_index", -100),
      static_cast<T*>(args.out[0]), ctx.errors, ctx.step);
  PF_CUDA_CHECK_LAUNCH();
}

// dlogits = g[r, 0] * exp(logit - max), plus g[r, 1] at the target's class
// where this rank holds it; one thread per logit (no reduction to share).
template <class T>
__global__ void cross_entropy_parts_grad_kernel(const T* g, const T* logits, const T* max, const void* targets,
                                                bool t64, int64_t rows, VocabShare share, int64_t ignore, T* dx,
                                                DeviceErrorSlot* errors, int step) {
  PF_GRID_STRIDE(f, rows * share.held) {
    const int64_t r = f / share.held, j = f - r * share.held;
    const int64_t t = load_index(targets, t64, r);
    const bool checked = t != ignore && t >= 0 && t < share.vocab;
    if (j == 0 && t != ignore && !checked) report_error(errors, kCrossEntropyPartsGradTarget, step, r, t, share.vocab);
    float d = to_float(g[2 * r]) * expf(to_float(logits[f]) - to_float(max[r]));
    if (checked && share.local(t) == j) d += to_float(g[2 * r + 1]);
    dx[f] = from_float<T>(d);
  }
}

template <class T>
void cross_entropy_parts_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const VocabShare share = vocab_share(args.attrs, args.in_types[1].shape.back());
  const int64_t rows = args.in_types[3].numel();
  if (rows * share.held == 0) return;
  cross_entropy_parts_grad_kernel<T><<<blocks_for(rows * share.held), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<const T*>(args.in[2]),
      args.in[3], args.in_types[3].dtype == DType::i64, rows, share, args.attrs.get_int("ignore_index", -100),
      static_cast<T*>(args.out[0]), ctx.errors, ctx.step);
  PF_CUDA_CHECK_LAUNCH();
}

// Per row: log(sum) - target logit (in double, as the CPU) and whether it
// counts. The parts carry no vocabulary, so any target but ignore_index counts.
template <class T>
__global__ void cross_entropy_total_rows_kernel(const T* parts, const void* targets, bool t64, int64_t rows,
                                                int64_t ignore, float* nll, float* counted) {
  PF_GRID_STRIDE(r, rows) {
    const bool counts = load_index(targets, t64, r) != ignore;
    nll[r] = counts ? static_cast<float>(log(static_cast<double>(to_float(parts[2 * r]))) -
                                         static_cast<double>(to_float(parts[2 * r + 1])))
                    : 0.f;
    counted[r] = counts ? 1.f : 0.f;
  }
}

template <class T>
void cross_entropy_total(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t rows = args.in_types[1].numel();
  auto* per_row = static_cast<float*>(ctx.scratch(static_cast<size_t>(2 * rows) * sizeof(float)));  // nll, counted
  if (rows > 0) {
    cross_entropy_total_rows_kernel<T><<<blocks_for(rows), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(args.in[0]), args.in[1], args.in_types[1].dtype == DType::i64, rows,
        args.attrs.get_int("ignore_index", -100), per_row, per_row + rows);
    PF_CUDA_CHECK_LAUNCH();
  }
  mean_of_sums_kernel<T><<<1, kSumThreads, 0, ctx.stream>>>(per_row, per_row + rows, rows, 0,
                                                            static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// Per counted row: [g / (count * sum), -g / count]; other rows 0 (all of
// them when none counts).
template <class T>
__global__ void cross_entropy_total_grad_kernel(const T* g, const float* count, const T* parts, const void* targets,
                                                bool t64, int64_t rows, int64_t ignore, T* dparts) {
  const float scale =
      *count == 0.f ? 0.f : static_cast<float>(static_cast<double>(to_float(*g)) / static_cast<double>(*count));
  PF_GRID_STRIDE(r, rows) {
    const bool counts = load_index(targets, t64, r) != ignore;
    dparts[2 * r] = from_float<T>(counts ? scale / to_float(parts[2 * r]) : 0.f);
    dparts[2 * r + 1] = from_float<T>(counts ? -scale : 0.f);
  }
}

template <class T>
void cross_entropy_total_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t rows = args.in_types[2].numel();
  if (rows == 0) return;
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  const bool t64 = args.in_types[2].dtype == DType::i64;
  auto* count = static_cast<float*>(ctx.scratch(sizeof(float)));
  count_targets_kernel<<<1, kThreads, 0, ctx.stream>>>(args.in[2], t64, rows, 0, ignore, kNoDeviceError, count,
                                                       ctx.errors, ctx.step);
  PF_CUDA_CHECK_LAUNCH();
  cross_entropy_total_grad_kernel<T><<<blocks_for(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), count, static_cast<const T*>(args.in[1]), args.in[2], t64, rows, ignore,
      static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// mse_loss: mean((a - b)^2); each block writes its partial sum in float,
// then one block adds the (at most 1024) partials in double. 0 for empty
// inputs, as on the CPU.
constexpr int kMaxPartials = 1024;

template <class T>
__global__ void squared_error_partials_kernel(const T* a, const T* b, int64_t n, float* partials) {
  __shared__ float shared[32];
  float s = 0.f;
  PF_GRID_STRIDE(i, n) {
    const float d = to_float(a[i]) - to_float(b[i]);
    s += d * d;
  }
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

template <class T>
void mse_loss(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t n = args.in_types[0].numel();
  const unsigned blocks = blocks_for(n) < kMaxPartials ? blocks_for(n) : kMaxPartials;
  auto* partials = static_cast<float*>(ctx.scratch(kMaxPartials * sizeof(float)));
  squared_error_partials_kernel<T><<<blocks, kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), n, partials);
  PF_CUDA_CHECK_LAUNCH();
  mean_of_sums_kernel<T><<<1, kSumThreads, 0, ctx.stream>>>(partials, nullptr, blocks, static_cast<double>(n),
                                                            static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_movement_loss_kernels(KernelTable& t) {
  t.set_any_dtype(OpKind::reshape, reshape);
  t.set_any_dtype(OpKind::slice, slice);
  t.set_any_dtype(OpKind::concat, concat);
  t.set_any_dtype(OpKind::split, split);
  t.set_any_dtype(OpKind::slice_grad, slice_grad);
  t.set_float(OpKind::embedding, embedding<float>, embedding<bf16>);
  t.set_float(OpKind::embedding_grad, embedding_grad<float>, embedding_grad<bf16>);
  t.set_float(OpKind::cross_entropy, cross_entropy<float>, cross_entropy<bf16>);
  t.set_float(OpKind::cross_entropy_grad, cross_entropy_grad<float>, cross_entropy_grad<bf16>);
  t.set_float(OpKind::cross_entropy_parts, cross_entropy_parts<float>, cross_entropy_parts<bf16>);
  t.set_float(OpKind::cross_entropy_parts_grad, cross_entropy_parts_grad<float>, cross_entropy_parts_grad<bf16>);
  t.set_float(OpKind::cross_entropy_total, cross_entropy_total<float>, cross_entropy_total<bf16>);
  t.set_float(OpKind::cross_entropy_total_grad, cross_entropy_total_grad<float>, cross_entropy_total_grad<bf16>);
  t.set_float(OpKind::mse_loss, mse_loss<float>, mse_loss<bf16>);
}

}  // namespace pf::cuda
