// Turning what escapes a command into a message and an exit status.
#include "tools/exit_status.h"

#include <fmt/format.h>

#include <exception>
#include <new>
#include <ostream>

#include "ir/diagnostic.h"

namespace pf::tools {

namespace {

// Every error the code expects is a pf::Error; anything else is a bug, and
// the message says so instead of the runtime's "terminate called after...".
int internal_error(std::ostream& err, const std::string& what) {
  err << fmt::format("internal error: {}\nthis is a bug in Pipeforge: please report it with the command and the "
                     "files it read\n",
                     what);
  return kExitInternal;
}

}  // namespace

int run_command(const std::function<int()>& command, std::ostream& err) {
  try {
    return command();
  } catch (const AlreadyReported&) {
    return kExitError;
  } catch (const Error& e) {
    err << e.render();
    return kExitError;
  } catch (const std::bad_alloc&) {
    err << "error: out of memory\n";
    return kExitError;
  } catch (const std::exception& e) {
    return internal_error(err, e.what());
  } catch (...) {
    return internal_error(err, "an exception of unknown type");
  }
}

}  // namespace pf::tools
