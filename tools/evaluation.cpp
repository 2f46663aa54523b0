// Evaluation: the mean loss over the first batches of a data set, through the runtime's forward-only pass.
#include "tools/evaluation.h"

#include <fmt/format.h>

#include "ir/diagnostic.h"

namespace pf::tools {

std::string Evaluation::summary() const {
  const double percent = predicted > 0 ? 100.0 * static_cast<double>(correct) / static_cast<double>(predicted) : 0;
  const std::string accuracy = predicted > 0 ? fmt::format("  accuracy {:.2f}%", percent) : "";
  return fmt::format("  loss {:.6f}{}  ({} batch{})", loss, accuracy, batches, batches == 1 ? "" : "es");
}

int64_t eval_batches(const BatchSource& source, int64_t asked, const std::string& flag) {
  const int64_t have = source.batches_per_epoch();
  if (asked == 0) return have;
  if (asked > have)
    throw Error(fmt::format("{} {}: {} holds {} whole batch{}", flag, asked, source.data_path(), have,
                            have == 1 ? "" : "es"));
  return asked;
}

Evaluation evaluate(Runtime& runtime, BatchSource& source, int64_t batches) {
  source.seek(0);
  Evaluation out;
  double sum = 0;
  for (int64_t k = 0; k < batches; ++k) {
    sum += runtime.forward(source.next());
    out.correct += runtime.last_step().correct;
    out.predicted += runtime.last_step().predicted;
  }
  out.batches = batches;
  out.loss = batches > 0 ? sum / static_cast<double>(batches) : 0;
  return out;
}

}  // namespace pf::tools
