// What an interrupted write leaves behind. Checkpoints and weights are
// written to X.tmp and renamed over X (support/atomic_file.h,
// SafeTensors::write), so a run killed mid-write leaves X.tmp; the next run
// that writes there removes it, and says so.
#pragma once

#include <string>
#include <vector>

namespace pf::tools {

/// Removes `file`.tmp for every file in `files` and every *.tmp directly in
/// each folder of `folders` (a checkpoint's shards and index), where they
/// exist; returns one note per file removed: "removed a partial
/// ck/stage-0.<hash>.safetensors.tmp left by an interrupted write". A file
/// that cannot be removed throws pf::Error naming it.
std::vector<std::string> remove_partial_writes(const std::vector<std::string>& files,
                                               const std::vector<std::string>& folders);

}  // namespace pf::tools
