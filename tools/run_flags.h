// `pipeforge run`: flags whose meaning depends on the plan being run (a
// model runs as a plan of one stage). Given where they mean nothing, they
// stop the run with what to do instead, so that no flag is ever silently
// ignored.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "plan/plan.h"

namespace pf::tools {

/// With a plan, whose shapes were fixed when it was compiled (the runtime
/// runs no pass): `--batch` and `--bind` are accepted when they agree with
/// the plan, and otherwise throw Error naming what the plan was compiled for
/// and the `pipeforge compile` command that makes the plan they ask for;
/// `--threads` is refused with more than one device, since each of them
/// runs the threads it was compiled for; `--recompute` and `--dtype` are
/// accepted when they say what the plan's programs do, and otherwise throw
/// Error with the command that compiles the plan so.
void check_plan_flags(const CLI::App& run, const Plan& plan, const std::string& plan_path);

/// A model (.pf, `--bind` and `--batch` applied) on one CPU device of
/// `threads` threads: a plan of one stage compiled here in memory, so that
/// it trains and evaluates through the same runtime as any plan;
/// `recompute` and `dtype` as compile's --recompute and --dtype.
Plan one_stage_plan(const std::string& file, const std::string& bind, int64_t batch, int threads,
                    const std::string& optimizer, const std::string& recompute = "none",
                    const std::string& dtype = "f32");

/// `--momentum` given to a run that does not train with sgd
/// throws Error.
void check_optimizer_flags(const CLI::App& run, const std::string& optimizer);

}  // namespace pf::tools
