// What `pipeforge` says and exits with when an exception escapes a command.
// No input makes the command throw anything but pf::Error (that would be the
// bug), so the commands here throw on purpose.
#include <gtest/gtest.h>

#include <new>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ir/diagnostic.h"
#include "tools/exit_status.h"

namespace pf::tools {
namespace {

struct Outcome {
  int status;
  std::string err;
};

Outcome run(const std::function<int()>& command) {
  std::ostringstream err;
  int status = run_command(command, err);
  return {status, err.str()};
}

constexpr const char* kReport =
    "this is a bug in Pipeforge: please report it with the command and the files it read\n";

TEST(ExitStatus, ACommandsOwnStatusPassesThrough) {
  EXPECT_EQ(run([] { return kExitOk; }).status, 0);
  Outcome usage = run([] { return kExitUsage; });
  EXPECT_EQ(usage.status, 2);
  EXPECT_EQ(usage.err, "");
}

TEST(ExitStatus, AnErrorInTheInputIsItsMessage) {
  Outcome o = run([]() -> int { throw Error("--batch 3: @g's batch dimension is fixed to 4"); });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "error: --batch 3: @g's batch dimension is fixed to 4\n");
}

TEST(ExitStatus, ErrorsAlreadyReportedAddNothing) {
  Outcome o = run([]() -> int { throw AlreadyReported{}; });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "");
}

TEST(ExitStatus, OutOfMemoryIsAnError) {
  Outcome o = run([]() -> int { throw std::bad_alloc(); });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "error: out of memory\n");
}

TEST(ExitStatus, AnyOtherExceptionIsAnInternalErrorToReport) {
  Outcome o = run([]() -> int { throw std::out_of_range("map::at"); });
  EXPECT_EQ(o.status, 3);
  EXPECT_EQ(o.err, std::string("internal error: map::at\n") + kReport);
}

TEST(ExitStatus, AnExceptionOfAnyTypeIsAnInternalError) {
  Outcome o = run([]() -> int { throw 42; });
  EXPECT_EQ(o.status, 3);
  EXPECT_EQ(o.err, std::string("internal error: an exception of unknown type\n") + kReport);
}

}  // namespace
}  // namespace pf::tools
