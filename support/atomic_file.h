// Files replaced whole: a crash leaves the old file or the new one.
#pragma once

#include <string>

namespace pf {

/// Writes `text` to `path`.tmp, flushes it to disk and renames it over
/// `path`; throws pf::Error naming the path if any step fails.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace pf
