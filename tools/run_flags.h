// `pipeforge run`: flags that mean something for a model (.pf) or for a plan
// (.json), not for both. Given where they mean nothing, they stop the run with
// what to do instead, so that no flag is ever silently ignored.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "plan/plan.h"

namespace pf::tools {

/// With a plan, whose shapes were fixed when it was compiled (the runtime
/// runs no pass): `--batch` and `--bind` are accepted when they agree with
/// the plan, and otherwise throw Error naming what the plan was compiled for
/// and the `pipeforge compile` command that makes the plan they ask for;
/// `--threads` is refused, since each of a plan's devices runs on one core.
void check_plan_flags(const CLI::App& run, const Plan& plan, const std::string& plan_path);

/// With a model, trained on one device: the flags of a plan's run
/// (`--trace`, `--timeout`, `--checkpoint`, `--resume`) throw Error saying to
/// compile it first.
void check_model_flags(const CLI::App& run, const std::string& model_path);

/// With either: `--momentum` given to a run that does not train with sgd
/// throws Error.
void check_optimizer_flags(const CLI::App& run, const std::string& optimizer);

}  // namespace pf::tools
