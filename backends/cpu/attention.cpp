// attention and attention_grad: softmax(q k^T * scale [causal]) v tiled over keys with an online softmax, and the
// flash-attention backward that recomputes the scores from the forward's lse; cached_attention, the same online
// softmax over a cache of earlier keys and values, then the new ones.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/vector_math.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

// Rows of queries and of keys per tile: a tile of scores (kRows x kCols) and
// the q, k, v rows it reads stay in L2 for head sizes up to 128.
constexpr int64_t kRows = 64;
constexpr int64_t kCols = 64;

// q, k, v, o: N heads of [T, D] rows h.row_stride() apart (contiguous under
// layout "bhtd", interleaved with the other heads' under "bthd"); lse: [N, T].
using Heads = AttentionHeads;

// Zeroes `rows` rows of d values, ld apart.
template <class T>
void zero_rows(T* x, int64_t rows, int64_t d, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) std::fill(x + r * ld, x + r * ld + d, T(0));
}

// The keys a query row block [i0, i1) sees: all T, or under a causal mask
// those up to its last row.
int64_t key_end(bool causal, int64_t i1, int64_t t) { return causal ? std::min(i1, t) : t; }

// The online softmax of one block of `rows` query rows of one head, its
// keys taken in tiles of `tile` keys: m, l the running maximum and sum of
// each row, o the running sum of its values (row stride ld). s: scratch of
// rows x tile scores.
template <class T>
struct OnlineSoftmax {
  const T* q;
  T* o;
  int64_t rows, d, ld, tile;
  T scale;
  T *s, *m, *l;

  void begin() {
    zero_rows(o, rows, d, ld);  // (rows, D)
    std::fill(m, m + rows, -std::numeric_limits<T>::infinity());
    std::fill(l, l + rows, T(0));
  }

  // Keys and values [0, keys) (row stride ld) seen by every row, or, when
  // `diagonal` >= 0, key j by row r only where j <= diagonal + r (a causal
  // mask whose first row sits at position `diagonal` of these keys).
  void add_keys(const T* k, const T* v, int64_t keys, int64_t diagonal) {
    const T minus_inf = -std::numeric_limits<T>::infinity();
    for (int64_t j0 = 0; j0 < keys; j0 += tile) {
      const int64_t cols = std::min(tile, keys - j0);
      gemm(false, true, rows, cols, d, q, ld, k + j0 * ld, ld, s, tile);  // (rows, cols) = q k^T
      for (int64_t r = 0; r < rows; ++r) {
        T* sr = s + r * tile;
        // Keys after the row's own position are masked out (they come only in the diagonal tile).
        const int64_t visible = diagonal >= 0 ? std::clamp<int64_t>(diagonal + r + 1 - j0, 0, cols) : cols;
        for (int64_t c = 0; c < visible; ++c) sr[c] *= scale;
        const T row_max = visible > 0 ? std::max(m[r], max_of(sr, visible)) : m[r];
        const T alpha = m[r] == minus_inf ? T(0) : std::exp(m[r] - row_max);
        // Vectorised (libmvec's exp); the masked keys are past `visible`, so no -inf reaches it.
        T sum = 0;
        for (int64_t c = 0; c < visible; ++c) sr[c] = std::exp(sr[c] - row_max);
        for (int64_t c = 0; c < visible; ++c) sum += sr[c];
        for (int64_t c = visible; c < cols; ++c) sr[c] = 0;
        m[r] = row_max;
        l[r] = l[r] * alpha + sum;
        if (alpha != T(1)) {
          T* orow = o + r * ld;
          for (int64_t x = 0; x < d; ++x) orow[x] *= alpha;
        }
      }
      gemm_accumulate(false, false, rows, d, cols, s, tile, v + j0 * ld, ld, o, ld);  // o += p v
    }
  }

  // o normalised; each row's log-sum-exp into lse, if given.
  void finish(T* lse) {
    for (int64_t r = 0; r < rows; ++r) {
      const T inv = T(1) / l[r];
      T* orow = o + r * ld;
      for (int64_t x = 0; x < d; ++x) orow[x] *= inv;
      if (lse) lse[r] = m[r] + std::log(l[r]);
    }
  }
};

// An OnlineSoftmax over the calling thread's scratch: s (kRows x kCols), m and l (kRows each). Training's
// attention takes keys kCols at a time; `wide` tiles fill s with the rows there are (a token or a few read over a
// cache: one tile of a few thousand keys instead of many small products).
template <class T>
OnlineSoftmax<T> online_softmax(const T* q, T* o, const Heads& h, int64_t rows, double scale, bool wide = false) {
  T* s = static_cast<T*>(scratch(static_cast<size_t>(kRows * kCols + 2 * kRows) * sizeof(T)));
  const int64_t tile = wide ? kRows * kCols / rows / kCols * kCols : kCols;
  return {q, o, rows, h.d, h.row_stride(), tile, static_cast<T>(scale), s, s + kRows * kCols, s + kRows * kCols + kRows};
}

// The key head each query head reads: its own, or under grouped-query
// attention the one it shares with the other heads of its group.
std::vector<int64_t> key_heads(const TensorType& q, const TensorType& k, const Heads& h) {
  if (k != q) return attention_key_heads(q, k);
  std::vector<int64_t> same(static_cast<size_t>(h.n));
  for (int64_t n = 0; n < h.n; ++n) same[static_cast<size_t>(n)] = n;
  return same;
}

// operands q, k, v [..., H, T, D] or [..., T, H, D] (layout; k and v may
// have fewer heads, see attention_groups_keys); results o of q's type, lse
// [..., H, T].
template <class T>
void attention(const KernelArgs& args) {
  const Heads h = attention_heads(args.attrs, args.in_types[0]), kv = attention_heads(args.attrs, args.in_types[1]);
  const std::vector<int64_t> key_head = key_heads(args.in_types[0], args.in_types[1], h);
  const bool causal = args.attrs.get_bool("causal", false);
  const double scale = attention_scale(args.attrs, args.in_types[0]);
  const auto* q = static_cast<const T*>(args.in[0]);
  const auto* k = static_cast<const T*>(args.in[1]);
  const auto* v = static_cast<const T*>(args.in[2]);
  auto* o = static_cast<T*>(args.out[0]);
  auto* lse = static_cast<T*>(args.out[1]);
  const int64_t blocks = (h.t + kRows - 1) / kRows;
  // Tasks are (head, row block): each writes its own rows, in the same order on any number of threads.
  parallel_for(h.n * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, i0 = (task % blocks) * kRows, rows = std::min(kRows, h.t - i0);
      const int64_t head = h.offset(n), first = head + i0 * h.row_stride();
      const int64_t keys = kv.offset(key_head[static_cast<size_t>(n)]);
      OnlineSoftmax<T> softmax = online_softmax(q + first, o + first, h, rows, scale);
      softmax.begin();
      softmax.add_keys(k + keys, v + keys, key_end(causal, i0 + rows, h.t), causal ? i0 : -1);
      softmax.finish(lse + n * h.t + i0);
    }
  });
}

// operands q, k, v (N new positions, attention's layouts), k_cache, v_cache
// (S positions), positions [N] or [B, N]; result o of q's type. Row r of the
// new queries sees the first positions[0] rows of the caches (its sequence's
// positions[b, 0] under [B, N]) and the new keys up to its own.
template <class T>
void cached_attention(const KernelArgs& args) {
  const Heads h = attention_heads(args.attrs, args.in_types[0]), kv = attention_heads(args.attrs, args.in_types[1]);
  const Heads cache = attention_heads(args.attrs, args.in_types[3]);
  const std::vector<int64_t> key_head = key_heads(args.in_types[0], args.in_types[1], h);
  const double scale = attention_scale(args.attrs, args.in_types[0]);
  if (h.n == 0 || h.t == 0) return;  // no query, and maybe no position to read
  // Each sequence's filled rows: the first of its positions.
  const TensorType& positions = args.in_types[5];
  const int64_t sequences = positions.rank() == 2 ? positions.shape[0] : 1;
  std::vector<int64_t> filled(static_cast<size_t>(sequences));
  for (int64_t b = 0; b < sequences; ++b) {
    const int64_t first = b * h.t;
    filled[static_cast<size_t>(b)] = positions.dtype == DType::i64 ? static_cast<const int64_t*>(args.in[5])[first]
                                                                  : static_cast<const int32_t*>(args.in[5])[first];
    if (filled[static_cast<size_t>(b)] < 0 || filled[static_cast<size_t>(b)] + h.t > cache.t)
      throw Error(fmt::format("cached_attention: {} new positions after {} cached ones do not fit in a cache of {}",
                              h.t, filled[static_cast<size_t>(b)], cache.t));
  }
  const int64_t heads_per_sequence = h.n / sequences;
  const auto* q = static_cast<const T*>(args.in[0]);
  const auto* k = static_cast<const T*>(args.in[1]);
  const auto* v = static_cast<const T*>(args.in[2]);
  const auto* k_cache = static_cast<const T*>(args.in[3]);
  const auto* v_cache = static_cast<const T*>(args.in[4]);
  auto* o = static_cast<T*>(args.out[0]);
  const int64_t blocks = (h.t + kRows - 1) / kRows;
  parallel_for(h.n * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, i0 = (task % blocks) * kRows, rows = std::min(kRows, h.t - i0);
      const int64_t head = h.offset(n), first = head + i0 * h.row_stride();
      const int64_t m = key_head[static_cast<size_t>(n)], keys = kv.offset(m), cached = cache.offset(m);
      OnlineSoftmax<T> softmax = online_softmax(q + first, o + first, h, rows, scale, /*wide=*/true);
      softmax.begin();
      softmax.add_keys(k_cache + cached, v_cache + cached, filled[static_cast<size_t>(n / heads_per_sequence)], -1);
      softmax.add_keys(k + keys, v + keys, i0 + rows, i0);
      softmax.finish(nullptr);
    }
  });
}

// One query head's gradients, key block by key block (the outer loop) and
// query block by query block within it; dq is zeroed first, and all three
// summed into (dk and dv also take the other heads of a group's).
// scratch: delta (T,), p and dp (kRows x kCols each).
template <class T>
void backward_head(const T* g, const T* q, const T* k, const T* v, const T* o, const T* lse, T* dq, T* dk, T* dv,
                   const Heads& h, double scale, bool causal, T* delta, T* p, T* dp) {
  const int64_t t = h.t, d = h.d, ld = h.row_stride();
  const T sc = static_cast<T>(scale);
  // delta_i = sum_x g[i,x] o[i,x]: the row sums of softmax_grad.
  for (int64_t i = 0; i < t; ++i) {
    T sum = 0;
    for (int64_t x = 0; x < d; ++x) sum += g[i * ld + x] * o[i * ld + x];
    delta[i] = sum;
  }
  zero_rows(dq, t, d, ld);
  for (int64_t j0 = 0; j0 < t; j0 += kCols) {
    const int64_t cols = std::min(kCols, t - j0);
    const int64_t first = causal ? j0 / kRows * kRows : 0;  // the first query block that sees these keys
    for (int64_t i0 = first; i0 < t; i0 += kRows) {
      const int64_t rows = std::min(kRows, t - i0);
      gemm(false, true, rows, cols, d, q + i0 * ld, ld, k + j0 * ld, ld, p, kCols);   // s = q k^T
      gemm(false, true, rows, cols, d, g + i0 * ld, ld, v + j0 * ld, ld, dp, kCols);  // dp = g v^T
      for (int64_t r = 0; r < rows; ++r) {
        T* pr = p + r * kCols;
        T* dpr = dp + r * kCols;
        const int64_t visible = causal ? std::clamp<int64_t>(i0 + r + 1 - j0, 0, cols) : cols;
        const T row_lse = lse[i0 + r], row_delta = delta[i0 + r];
        for (int64_t c = 0; c < visible; ++c) pr[c] = std::exp(pr[c] * sc - row_lse);           // p
        for (int64_t c = 0; c < visible; ++c) dpr[c] = pr[c] * (dpr[c] - row_delta) * sc;  // ds (s = q k^T * scale)
        for (int64_t c = visible; c < cols; ++c) pr[c] = dpr[c] = 0;
      }
      gemm_accumulate(true, false, cols, d, rows, p, kCols, g + i0 * ld, ld, dv + j0 * ld, ld);    // dv += p^T g
      gemm_accumulate(false, false, rows, d, cols, dp, kCols, k + j0 * ld, ld, dq + i0 * ld, ld);  // dq += ds k
      gemm_accumulate(true, false, cols, d, rows, dp, kCols, q + i0 * ld, ld, dk + j0 * ld, ld);   // dk += ds^T q
    }
  }
}

// operands g, q, k, v, o, lse; results dq, dk, dv (all but lse in q's layout).
template <class T>
void attention_grad(const KernelArgs& args) {
  const Heads h = attention_heads(args.attrs, args.in_types[1]), kv = attention_heads(args.attrs, args.in_types[2]);
  const std::vector<int64_t> key_head = key_heads(args.in_types[1], args.in_types[2], h);
  std::vector<std::vector<int64_t>> readers(static_cast<size_t>(kv.n));  // each key head's query heads, in order
  for (int64_t n = 0; n < h.n; ++n) readers[static_cast<size_t>(key_head[static_cast<size_t>(n)])].push_back(n);
  const bool causal = args.attrs.get_bool("causal", false);
  const double scale = attention_scale(args.attrs, args.in_types[1]);
  const T* in[6];
  for (int i = 0; i < 6; ++i) in[i] = static_cast<const T*>(args.in[i]);
  T* out[3];
  for (int i = 0; i < 3; ++i) out[i] = static_cast<T*>(args.out[i]);
  // One task per key head, its query heads in order: dq sums over key blocks
  // and dk, dv over the group's heads in a fixed order, whatever the threads.
  parallel_for(kv.n, 1, [&](int64_t begin, int64_t end) {
    T* delta = static_cast<T*>(scratch(static_cast<size_t>(h.t + 2 * kRows * kCols) * sizeof(T)));
    T* p = delta + h.t;
    T* dp = p + kRows * kCols;
    for (int64_t m = begin; m < end; ++m) {
      const int64_t keys = kv.offset(m);
      zero_rows(out[1] + keys, kv.t, kv.d, kv.row_stride());
      zero_rows(out[2] + keys, kv.t, kv.d, kv.row_stride());
      for (int64_t n : readers[static_cast<size_t>(m)]) {
        const int64_t head = h.offset(n);
        backward_head(in[0] + head, in[1] + head, in[2] + keys, in[3] + keys, in[4] + head, in[5] + n * h.t,
                      out[0] + head, out[1] + keys, out[2] + keys, h, scale, causal, delta, p, dp);
      }
    }
  });
}

}  // namespace

void add_attention_kernels(KernelTable& table) {
  table.set_float(OpKind::attention, attention<float>, attention<double>);
  table.set_float(OpKind::attention_grad, attention_grad<float>, attention_grad<double>);
  table.set_float(OpKind::cached_attention, cached_attention<float>, cached_attention<double>);
}

}  // namespace pf::cpu
