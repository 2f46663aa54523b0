// Evaluation: the mean loss of a model over the first batches of a data set, forward only.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/runtime.h"
#include "tools/batch_source.h"

namespace pf::tools {

struct Evaluation {
  double loss = 0;      // the mean of the batches' losses (each the mean over its samples)
  int64_t batches = 0;
  /// A classifier's predictions (PipelineStepResult::correct): right, of
  /// how many; 0 of 0 when the model has none or its logits are on a GPU.
  int64_t correct = 0, predicted = 0;

  /// "  loss 1.234567  accuracy 87.50%  (8 batches)": what an eval line says.
  std::string summary() const;
};

/// The number of batches an evaluation reads: `asked` (> 0), or every whole
/// batch of the data set when 0. Throws Error when the data set has fewer
/// than `asked`; `flag` names the option that asked, in the message.
int64_t eval_batches(const BatchSource& source, int64_t asked, const std::string& flag);

/// Runs the forward of batches 0 .. batches - 1 of `source` (its own order:
/// every evaluation reads the same batches) and averages their losses.
/// Nothing is stashed for a backward and no gradient or optimizer state
/// changes (Runtime::forward). Collective between processes, as forward is.
Evaluation evaluate(Runtime& runtime, BatchSource& source, int64_t batches);

}  // namespace pf::tools
