// Bringing what ranks in other processes hold to one of them: the text of
// checkpoint index entries, and the parameters or their gradients by name.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "plan/plan.h"
#include "runtime/safetensors.h"

namespace pf {

/// Message tags of the gathers, above every hand-off's (runtime/rank_worker.h),
/// so that a gather never takes a hand-off's message.
inline constexpr int64_t kGatherTextTag = int64_t{1} << 48;
inline constexpr int64_t kGatherParameterTag = int64_t{2} << 48;
inline constexpr int64_t kGatherStateTag = int64_t{3} << 48;  // a replica's share of a sharded optimizer

/// Every rank of `group` calls it with its `text`: rank `root` gets all of
/// them in the group's rank order (its own included), the others an empty
/// vector. Ends with a barrier of the group, so the texts may change after.
std::vector<std::string> gather_text(Communicator& comm, const CommGroup& group, int root, const std::string& text);

/// Every rank of the plan's world calls it with what its own stages hold by
/// name (`local`: a tied parameter once, as Pipeline::save_values writes
/// it): rank `root` gets every parameter of the plan by name, each from the
/// rank running the first stage that holds it in replica 0, the others an
/// empty set. Shapes come from the plan: no sizes are exchanged.
SafeTensors gather_parameters(Communicator& comm, const Plan& plan, int root, const SafeTensors& local);

}  // namespace pf
