// Removing the *.tmp files that interrupted writes leave.
#include "tools/stale_files.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "ir/diagnostic.h"

namespace pf::tools {

namespace fs = std::filesystem;

namespace {

void remove_one(const fs::path& path, std::vector<std::string>& notes) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return;
  if (!fs::remove(path, ec) && ec)
    throw Error(fmt::format("cannot remove '{}', a partial file left by an interrupted write: {}", path.string(),
                            ec.message()));
  notes.push_back(fmt::format("removed a partial {} left by an interrupted write", path.string()));
}

}  // namespace

std::vector<std::string> remove_partial_writes(const std::vector<std::string>& files,
                                               const std::vector<std::string>& folders) {
  std::vector<std::string> notes;
  for (const std::string& file : files)
    if (!file.empty()) remove_one(fs::path(file + ".tmp"), notes);
  for (const std::string& folder : folders) {
    if (folder.empty()) continue;
    std::error_code ec;
    std::vector<fs::path> partial;
    for (const fs::directory_entry& e : fs::directory_iterator(folder, ec))
      if (e.path().filename().string().ends_with(".tmp")) partial.push_back(e.path());
    std::sort(partial.begin(), partial.end());  // notes in a stable order
    for (const fs::path& p : partial) remove_one(p, notes);
  }
  return notes;
}

}  // namespace pf::tools
