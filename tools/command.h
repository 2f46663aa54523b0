// The sub-commands of `pipeforge`, each defined in its own file.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

#include "ir/module.h"
#include "tools/exit_status.h"
#include "tools/model_loading.h"

namespace pf::tools {

void add_check_command(CLI::App& app);
void add_compile_command(CLI::App& app);
void add_dump_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_import_command(CLI::App& app);
void add_launch_command(CLI::App& app);
void add_opt_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_profile_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_schedule_command(CLI::App& app);
void add_simulate_command(CLI::App& app);
void add_stats_command(CLI::App& app);

/// Reads `path` ("-" is standard input) and calls `fn` on it; with `split`,
/// calls `fn` on each part between `// -----` lines (line numbers stay those
/// of the file), reporting each part's error and going on, then throws
/// AlreadyReported if any part failed. Returns the parts' outputs joined by
/// `// -----` lines.
std::string for_each_input(const std::string& path, bool split,
                           const std::function<std::string(std::shared_ptr<const SourceFile>)>& fn);

/// The common `--split-input-file` flag.
void add_split_option(CLI::App& cmd, bool& split);

/// "4,8,12" -> {4, 8, 12}; throws Error naming `option` on anything else.
std::vector<int> parse_int_list(std::string_view text, const char* option);

/// Writes `text` to `path`, or to standard output when `path` is empty or "-".
void write_output(const std::string& path, const std::string& text);

/// The common `--bind B=8,T=64` option.
void add_bind_option(CLI::App& cmd, std::string& bind);

}  // namespace pf::tools
