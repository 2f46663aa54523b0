// `pipeforge`: the command line. Exit status 0 on success, 1 on a user error
// (its located message on standard error), 2 on bad usage.
#include <CLI/CLI.hpp>

#include <iostream>

#include "ir/diagnostic.h"
#include "tools/command.h"

int main(int argc, char** argv) {
  CLI::App app{"pipeforge: compile models into pipeline-parallel plans and train them"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "print help for every command");
  pf::tools::add_check_command(app);
  pf::tools::add_compile_command(app);
  pf::tools::add_dump_command(app);
  pf::tools::add_opt_command(app);
  pf::tools::add_profile_command(app);
  pf::tools::add_run_command(app);
  pf::tools::add_schedule_command(app);
  pf::tools::add_stats_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const pf::tools::AlreadyReported&) {
    return 1;
  } catch (const pf::Error& e) {
    std::cerr << e.render();
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory\n";
    return 1;
  }
  return 0;
}
