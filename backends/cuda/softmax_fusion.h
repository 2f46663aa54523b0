// The attention-score op chains the CUDA executor runs as one kernel each: scale, mask and softmax, and their gradient.
#pragma once

#include <vector>

#include "ir/module.h"

namespace pf::cuda {

/// A chain of three ops whose two intermediate values have no other reader
/// and are not returned:
///   forward:  %s = mul %x, %scale;  %m = where %mask, %s, %fill;  %y = softmax %m  (last axis)
///   gradient: %d = softmax_grad %g, %y;  %m = where %mask, %d, %fill;  %dx = mul %m, %scale  (last axis)
/// with %scale and %fill one-element floats and %mask a bool tensor of the
/// scores' trailing dimensions (a causal mask). Unfused, the B x H x T x T
/// scores go through memory three times, each pass bandwidth-bound.
struct SoftmaxChain {
  bool gradient = false;
  std::vector<int> ops;                // the three ops, in order; the fused kernel runs at the last
  std::vector<ValueId> operands;       // forward: x, scale, mask, fill; gradient: g, y, mask, fill, scale
  ValueId result = -1;                 // %y or %dx
  std::vector<ValueId> intermediates;  // never computed once fused
};

/// Every such chain of `f`, in op order; the spans of two chains (first op
/// to last) never overlap.
std::vector<SoftmaxChain> find_softmax_chains(const Function& f, const DimBinding& binding);

}  // namespace pf::cuda
