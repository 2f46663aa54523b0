// `pipeforge`: the command line. Exit status 0 on success, 1 on a user error
// (its located message on standard error), 2 on bad usage, 3 on an internal
// error (a bug; tools/exit_status.h).
#include <CLI/CLI.hpp>

#include <iostream>

#include "tools/command.h"
#include "tools/exit_status.h"
#include "tools/version.h"

int main(int argc, char** argv) {
  using namespace pf::tools;
  // The commands are set up inside too: a mistake in their options is a bug
  // that CLI11 throws as it builds them.
  return run_command(
      [&] {
        CLI::App app{"pipeforge: compile models into pipeline-parallel plans and train them"};
        app.require_subcommand(1);
        app.set_help_all_flag("--help-all", "print help for every command");
        app.set_version_flag("--version", version_text,
                             "print the version, the commit it was built from, CUDA and the CPU kernels, and exit");
        // Every command's help shows its options' defaults; the commands
        // inherit this from the app.
        app.option_defaults()->always_capture_default();
        add_check_command(app);
        add_compile_command(app);
        add_dump_command(app);
        add_eval_command(app);
        add_import_command(app);
        add_launch_command(app);
        add_opt_command(app);
        add_plot_command(app);
        add_profile_command(app);
        add_run_command(app);
        add_sample_command(app);
        add_schedule_command(app);
        add_simulate_command(app);
        add_stats_command(app);
        try {
          app.parse(argc, argv);
        } catch (const CLI::CallForHelp& e) {
          return app.exit(e);
        } catch (const CLI::CallForAllHelp& e) {
          return app.exit(e);
        } catch (const CLI::CallForVersion& e) {
          return app.exit(e);
        } catch (const CLI::ParseError& e) {
          app.exit(e);
          return kExitUsage;
        }
        return kExitOk;
      },
      std::cerr);
}
