// Source locations and located errors: every user-facing error in Pipeforge
// is printed as `file:line:col: error: message`, the source line, and a caret.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace pf {

/// A file's text kept alive for as long as anything points into it, so that a
/// diagnostic raised long after parsing can still quote the offending line.
class SourceFile {
 public:
  SourceFile(std::string name, std::string text);

  const std::string& name() const { return name_; }
  const std::string& text() const { return text_; }
  /// The text of 1-based line `line` without its newline ("" when out of range).
  std::string_view line(int line) const;

 private:
  std::string name_;
  std::string text_;
  std::vector<size_t> line_starts_;
};

/// A point in a source file; `file == nullptr` means "no location" (IR built
/// by a pass rather than read from text).
struct Location {
  std::shared_ptr<const SourceFile> file;
  int line = 0;
  int col = 0;

  bool known() const { return file != nullptr && line > 0; }
};

/// The one error type of the library. Only tools/ turns it into an exit code.
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, Location loc = {})
      : std::runtime_error(message), message_(std::move(message)), loc_(std::move(loc)) {}

  const std::string& message() const { return message_; }
  const Location& location() const { return loc_; }

  /// `file:line:col: error: message`, then the source line and a caret under
  /// the column; just `error: message` when the location is unknown.
  std::string render() const;

 private:
  std::string message_;
  Location loc_;
};

/// Reads a whole file; throws Error("cannot open ...") naming the path.
std::shared_ptr<const SourceFile> read_source_file(const std::string& path);

}  // namespace pf
