// Splits a backward function into its input-gradient part and its weight-gradient part, as zero-bubble pipeline
// schedules run them: B (what the previous stage waits for) now, W (the parameters' gradients) later, in a bubble.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"
#include "ir/gradients.h"

namespace pf {


/// Splits `gradients.backward` of `m` (its first `gradients.input_grads.size()`
/// results are input gradients, the rest parameter gradients) and adds the two
/// functions to `m`, leaving the backward itself in place. Running the input
/// part, then the weight part on the same arguments and the deferred values,
/// computes exactly what the backward computes, op for op.
BackwardSplit split_backward(Module& m, const GradientProgram& gradients, const DimBinding& binding);

}  // namespace pf
