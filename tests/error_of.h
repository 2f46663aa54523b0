// error_of: the message of the pf::Error a piece of test code throws, so that
// tests compare diagnostics as text.
#pragma once

#include <string>
#include <utility>

#include "ir/diagnostic.h"

namespace pf::testing_support {

/// Runs `fn` and returns the message of the pf::Error it throws, or
/// "(no error)" when it returns normally (which no message reads, so a test
/// expecting an error fails).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const Error& e) {
    return e.message();
  }
  return "(no error)";
}

/// The same with the whole diagnostic as the command prints it
/// (Error::render: `file:line:col: error: message`, the line, its caret).
template <typename Fn>
std::string rendered_error_of(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const Error& e) {
    return e.render();
  }
  return "(no error)";
}

}  // namespace pf::testing_support
