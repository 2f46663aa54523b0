// Reading a model for a command or the Python module: parse, bind dimensions, verify.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ir/module.h"

namespace pf::tools {

/// A model parsed and verified under its declared dimensions overridden by
/// `--bind`.
struct LoadedModel {
  Module module;
  DimBinding binding;
};
LoadedModel load_model(std::shared_ptr<const SourceFile> source, const std::string& bind, bool require_loss);
LoadedModel load_model(const std::string& path, const std::string& bind, bool require_loss);

/// The text of `path`, or of standard input for "-" (named "<stdin>").
std::shared_ptr<const SourceFile> read_model_input(const std::string& path);

/// --batch: binds the leading dimension of the graph's first input to
/// `batch` and verifies again.
void bind_batch(LoadedModel& model, int64_t batch);

}  // namespace pf::tools
