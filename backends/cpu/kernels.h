// The CPU backend's forward kernels: one table, indexed by op, of functions on contiguous buffers.
#pragma once

#include <cstdint>

#include "backends/common/kernel_args.h"
#include "ir/op_table.h"
#include "ir/types.h"

namespace pf::cpu {

using backend::KernelArgs;

/// A forward kernel: it runs one op of ops.def, the backward ops (relu_grad,
/// conv2d_grad_input, ...) included. Kernels split their large loops and products over
/// the device's thread budget (parallel.h; BLAS calls are single-threaded), keep
/// no state between calls apart from a reused per-thread scratch buffer, and
/// throw pf::Error on bad data that the verifier cannot see (an embedding
/// index or a cross-entropy target out of range, in the forward or backward
/// op).
using Kernel = void (*)(const KernelArgs&);

/// The kernel of `op` for float dtype `dtype` (f32 or f64); integer and bool
/// operands (indices, targets, conditions) keep their own dtype. The ops that
/// only produce or move values (constant, causal_mask, cast, reshape,
/// transpose, slice, concat, split) have one kernel for every dtype the
/// backend stores: f32, f64, i32, i64 and bool; so do broadcast_to and
/// slice_grad, which only move values and write zeros.
/// Throws pf::Error("no cpu kernel for <op> in <dtype>") when there is none
/// (param and call never have one: the executor supplies parameters and calls
/// are inlined before execution).
Kernel forward_kernel(OpKind op, DType dtype);
bool has_forward_kernel(OpKind op, DType dtype);

/// The number in [0, 1) that dropout compares with `p` for the element at flat
/// index `index` under `seed`: the top 53 bits of splitmix64's output for
/// counter `index` from state `seed`, i.e. mix(seed + (index + 1) * golden).
/// Element `index` is kept iff dropout_uniform(seed, index) >= p. It depends on
/// nothing else (not on threading nor on dtype), so a backward pass or another
/// backend recomputes exactly the same mask.
double dropout_uniform(uint64_t seed, uint64_t index);

}  // namespace pf::cpu
