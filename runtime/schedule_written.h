// Action lists as a file wrote them, before they are checked and built into a schedule: what Pipeforge's
// schedule text and PyTorch's schedule CSV share (internal to runtime/schedule_*.cpp).
#pragma once

#include <map>
#include <memory>
#include <string_view>
#include <vector>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "runtime/schedule_orders.h"

namespace pf::schedule_files {

/// How a format names a device and an action in its diagnostics: "dev 0"
/// and "B3c1" (Pipeforge's text), or "rank 0" and "5I3", the model stage
/// first (PyTorch's CSV).
enum class Dialect { pipeforge, torch_csv };

/// One compute action as written, where it was written.
struct Written {
  schedule_orders::Work work;  ///< the chunk of its device; a backward is `backward` until the lists are built
  std::string_view token;      ///< into the file's text
  int line = 0, col = 0;
};

/// A device's actions in order, and where its line (or row) starts.
struct DeviceLine {
  int line = 0, col = 0;
  std::vector<Written> actions;
};

/// Everything a file says: each device's actions and where the stages lie.
struct WrittenLists {
  std::shared_ptr<const SourceFile> file;
  Dialect dialect = Dialect::pipeforge;
  std::map<int, DeviceLine> devices;
  StagePlacement placement;
  /// The device of each stage where a placement line lists them, and the
  /// line (0: none). The checks hold the actions to it; a placement the
  /// reader derives from the actions themselves needs neither.
  std::vector<int> listed;
  int placement_line = 0;
  bool split = false;       ///< whether the backward runs as B and W
};

/// Checks `lists` (the devices 0 to p - 1 each present, every micro-batch's
/// F, B (and W) once per chunk and in that order, no deadlock) and builds
/// the schedule of kind custom; throws Error at the line and column of the
/// action at fault, in the file's dialect.
Schedule build_written(const WrittenLists& lists);

}  // namespace pf::schedule_files
