// The linear layers the CUDA executor runs as one cuBLASLt GEMM: the bias add, and a GELU after it, as epilogues.
#pragma once

#include <span>
#include <vector>

#include "backends/cuda/softmax_fusion.h"
#include "ir/module.h"

namespace pf::cuda {

/// `%mm = matmul %x, %w` (no transposes, %w of rank 2: one GEMM over the
/// rows of every batch), `%y = add %mm, %b` (either order) with %b of shape
/// [N] defined before the matmul, and optionally `%a = gelu %y`. %mm (and %y
/// when the GELU is fused) have no other reader and are not returned; in
/// training %y is stashed for gelu_grad, so there only the bias is fused.
/// The matmul's call then takes %b as a third operand and writes the last
/// value of the chain (CUBLASLT_EPILOGUE_BIAS or _GELU_BIAS); the add (and
/// the gelu) run no kernel, and the values before the last alias it.
struct GemmEpilogue {
  int matmul;     // op index
  int add;        // op index
  int gelu = -1;  // op index, or -1: the bias only
  ValueId bias;
  ValueId result;                      // %y, or %a with the GELU
  std::vector<ValueId> intermediates;  // %mm (and %y): never computed
};

/// Every such chain of `f`, in op order, leaving out any whose span (its
/// matmul to its last op) overlaps a softmax chain's.
std::vector<GemmEpilogue> find_gemm_epilogues(const Function& f, std::span<const SoftmaxChain> softmax_chains);

}  // namespace pf::cuda
