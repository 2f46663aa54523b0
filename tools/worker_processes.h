// Starting and supervising the worker processes of one host: what
// `pipeforge launch` does between starting the ranks and their exit.
#pragma once

#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace pf::tools {

/// One worker: the program and its arguments, what it adds to the
/// environment, and how messages name it ("rank 1 (stage 1, replica 0)").
struct WorkerSpec {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  std::string name;
};

/// Starts every worker and waits for all of them. Their standard output is
/// passed on line by line; their standard error too, each distinct line
/// once, and once a worker has reported an error ("error: ..."), only that
/// worker's: a failure reads as one message, not one per rank. When a
/// worker fails (a non-zero exit or a signal), the others get SIGTERM, and
/// SIGKILL `grace_s` later; a worker that a signal killed before any report
/// is reported as "error: NAME was killed by signal 9 (Killed)". Workers die with the
/// launcher (Linux's parent-death signal), so none is left behind, and
/// SIGINT or SIGTERM to the launcher is passed on to them. Returns 0 when
/// every worker exited with 0, else 1.
int run_workers(const std::vector<WorkerSpec>& workers, std::ostream& out, std::ostream& err, double grace_s);

}  // namespace pf::tools
