// What `pipeforge` exits with, and what it says about an exception that
// escapes a command.
#pragma once

#include <functional>
#include <iosfwd>

namespace pf::tools {

/// The exit statuses (README's "Exit status" line).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;     // an error in the input, or out of memory
inline constexpr int kExitUsage = 2;     // a bad command line
inline constexpr int kExitInternal = 3;  // a bug: an exception that no error path expects

/// Thrown by a command whose errors are already printed: exit status 1.
struct AlreadyReported {};

/// Runs `command` and returns its exit status. What escapes it is written to
/// `err` and decides the status: a pf::Error is rendered with its location
/// (1), std::bad_alloc is "error: out of memory" (1), AlreadyReported says
/// nothing more (1), and anything else is an internal error that asks to be
/// reported (3). Command-line errors are the command's to catch: CLI11
/// prints them through its app.
int run_command(const std::function<int()>& command, std::ostream& err);

}  // namespace pf::tools
