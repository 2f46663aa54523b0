// The float64 references of the forward-kernel tests, one per op or family of ops, declared by the file defining them.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "ir/op_table.h"
#include "ir/types.h"
#include "tests/cpu/every_op/harness.h"

namespace pf::cpu::every_op {

// References: plain loops, written for the reader, not for speed (each is described where it is defined).

// ---------------------------------------------------------------------------
// The forward ops but attention and the mixture of experts (forward_references.cpp).

Outputs map_ref(const std::vector<Tensor>& in, const TensorType& out,
                const std::function<double(const std::vector<double>&)>& f);
Reference unary_ref(std::function<double(double)> f);
Reference binary_ref(std::function<double(double, double)> f);
Reference matmul_ref(bool ta, bool tb);
Reference softmax_ref(int64_t axis, bool log);
Reference layernorm_ref(double eps);
Reference rmsnorm_ref(double eps);
Reference rope_ref(int64_t axis, double theta, bool inverse);
Outputs embedding_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out);
Reference embedding_share_ref(int64_t offset);
Reference transpose_ref(std::vector<int64_t> perm);
Reference slice_ref(int64_t axis, int64_t start);
Reference concat_ref(int64_t axis);
Reference split_ref(int64_t axis);

enum class Red { sum, mean, max };

Reference reduce_ref(std::vector<int64_t> axes, Red kind);
Reference conv2d_ref(std::vector<int64_t> stride, std::vector<int64_t> pad, int64_t groups);
Reference pool_ref(std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> pad, bool max);
Reference cross_entropy_parts_ref(int64_t offset);
Reference cross_entropy_total_ref(int64_t ignore);
Reference cross_entropy_ref(int64_t ignore);
Reference dropout_ref(double p, uint64_t seed);
Reference cast_ref(DType to);
Reference fill_ref(double value);
Outputs causal_mask_ref(const std::vector<Tensor>&, const std::vector<TensorType>& out);

// ---------------------------------------------------------------------------
// Mixture of experts (moe_references.cpp).

Tensor moe_route_of(const Tensor& logits, int64_t top_k, int64_t capacity, bool by_probability = false);
Reference moe_route_ref(int64_t top_k, bool by_probability = false);
Reference moe_gates_ref(int64_t top_k, bool renormalize);
Reference moe_gates_grad_ref(int64_t top_k, bool renormalize);
Reference moe_load_ref(int64_t top_k);
Reference moe_matmul_ref(bool ta, bool tb);
Reference swiglu_ref(bool grad);
Outputs moe_dispatch_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out);
Outputs moe_combine_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out);

// ---------------------------------------------------------------------------
// The backward ops (backward_references.cpp).

Outputs sum_to_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out);
double gelu_derivative(double x);
Reference softmax_grad_ref(int64_t axis, bool log);
Reference norm_grad_ref(double eps, bool rms);
Outputs embedding_grad_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out);
Reference embedding_share_grad_ref(int64_t offset);
Reference slice_grad_ref(int64_t axis, int64_t start);
Reference reduce_max_grad_ref(std::vector<int64_t> axes);
Tensor reduce_max_of(const Tensor& x, const std::vector<int64_t>& axes, bool keep);
Tensor softmax_of(const Tensor& x, int64_t axis, bool log);
Reference conv2d_grad_ref(std::vector<int64_t> stride, std::vector<int64_t> pad, int64_t groups, bool input);
Reference pool_grad_ref(std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> pad, bool max);
Reference cross_entropy_grad_ref(int64_t ignore);
Reference cross_entropy_parts_grad_ref(int64_t offset);
Reference cross_entropy_total_grad_ref(int64_t ignore);

// ---------------------------------------------------------------------------
// attention (attention_references.cpp): the whole T x T score matrix of each head, in plain loops.
// Element (n, i, x) of head n's [T, D] is at(n, i, x): q [..., H, T, D], or
// [..., T, H, D] under layout "bthd"; lse is [..., H, T] either way.

struct AttentionRef {
  int64_t heads, t, d;
  int64_t inner;  // H under "bthd", else 1
  double scale;
  bool causal;
  bool visible(int64_t i, int64_t j) const { return !causal || j <= i; }
  int64_t at(int64_t n, int64_t i, int64_t x) const { return ((n / inner * t + i) * inner + n % inner) * d + x; }
};

AttentionRef attention_geometry(const TensorType& q, const std::vector<OpAttrs::Entry>& attrs);
std::pair<std::vector<double>, std::vector<double>> attention_of(const AttentionRef& a, const std::vector<double>& q,
                                                                 const std::vector<double>& k,
                                                                 const std::vector<double>& v);
std::vector<double> repeat_keys(const Tensor& k, Shape to);
Reference attention_ref(std::vector<OpAttrs::Entry> attrs);
Reference cached_attention_ref(std::vector<OpAttrs::Entry> attrs);
Reference attention_grad_ref(std::vector<OpAttrs::Entry> attrs);

}  // namespace pf::cpu::every_op
