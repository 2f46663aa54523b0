// Gathers to one rank over a communicator: texts, then parameters by name.
#include "runtime/rank_gather.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "ir/diagnostic.h"

namespace pf {

std::vector<std::string> gather_text(Communicator& comm, const CommGroup& group, int root, const std::string& text) {
  const int me = comm.rank();
  const int64_t length = static_cast<int64_t>(text.size());
  std::vector<std::string> out;
  if (me != root) {
    // The length first: the root posts the text's receive knowing its size.
    comm.send(root, kGatherTextTag + 2 * me, &length, sizeof length);
    if (length > 0) comm.send(root, kGatherTextTag + 2 * me + 1, text.data(), length);
  } else {
    std::vector<int64_t> lengths(group.ranks.size(), 0);
    std::vector<int> handles(group.ranks.size(), -1);
    for (size_t k = 0; k < group.ranks.size(); ++k)
      if (group.ranks[k] != root)
        handles[k] = comm.post({group.ranks[k], kGatherTextTag + 2 * group.ranks[k], &lengths[k], sizeof(int64_t),
                                fmt::format("rank {} waits for rank {}'s text", root, group.ranks[k])});
    out.resize(group.ranks.size());
    for (size_t k = 0; k < group.ranks.size(); ++k) {
      const int from = group.ranks[k];
      if (from == root) {
        out[k] = text;
        continue;
      }
      std::memcpy(&lengths[k], comm.wait(handles[k]).data, sizeof(int64_t));
      if (lengths[k] == 0) continue;
      out[k].resize(static_cast<size_t>(lengths[k]));
      const int h = comm.post({from, kGatherTextTag + 2 * from + 1, out[k].data(), lengths[k],
                               fmt::format("rank {} waits for rank {}'s text", root, from)});
      const Received got = comm.wait(h);
      if (got.data != out[k].data()) std::memcpy(out[k].data(), got.data, static_cast<size_t>(lengths[k]));
    }
  }
  comm.barrier(group);  // the lent buffers are free again
  return out;
}

SafeTensors gather_parameters(Communicator& comm, const Plan& plan, int root, const SafeTensors& local) {
  // Each parameter once, in plan order, with the rank that sends it.
  struct Wanted {
    const PlanParam* param;
    int owner;
  };
  std::vector<Wanted> wanted;
  std::map<std::string, bool> seen;
  auto want = [&](const std::vector<PlanParam>& params, int owner) {
    for (const PlanParam& p : params)
      if (!seen[p.name]) {
        seen[p.name] = true;
        wanted.push_back({&p, owner});
      }
  };
  // A tensor-parallel stage's whole parameters from its first place, each
  // place's blocks from that place; a stage whose experts the replicas share
  // out, each replica's experts from that replica.
  for (const PlanStage& stage : plan.stages) {
    if (stage.shards.empty()) want(stage.params, rank_of_stage(plan, stage.index));
    for (size_t t = 0; t < stage.shards.size(); ++t)
      want(stage.shards[t].params, rank_of_part(plan, stage.index, static_cast<int>(t)));
  }
  const int me = comm.rank();
  SafeTensors out;
  std::vector<std::vector<std::byte>> buffers(wanted.size());
  std::vector<int> handles(wanted.size(), -1);
  for (size_t k = 0; k < wanted.size(); ++k) {
    const PlanParam& p = *wanted[k].param;
    const int64_t bytes = p.type.bytes();
    const int64_t tag = kGatherParameterTag + static_cast<int64_t>(k);
    if (wanted[k].owner == me && me != root) {
      const TensorData& t = local.at(p.name);
      if (static_cast<int64_t>(t.bytes.size()) != bytes)
        throw Error(fmt::format("{} holds {} bytes here, but the plan's {} has {}", p.name, t.bytes.size(),
                                p.type.str(), bytes));
      comm.send(root, tag, t.bytes.data(), bytes);
    } else if (me == root && wanted[k].owner != root) {
      buffers[k].resize(static_cast<size_t>(bytes));
      handles[k] = comm.post({wanted[k].owner, tag, buffers[k].data(), bytes,
                              fmt::format("rank {} waits for {} from rank {}", root, p.name, wanted[k].owner)});
    }
  }
  if (me == root)
    for (size_t k = 0; k < wanted.size(); ++k) {
      const PlanParam& p = *wanted[k].param;
      if (wanted[k].owner == root) {
        out.add(p.name, p.type, local.at(p.name).bytes.data());
        continue;
      }
      out.add(p.name, p.type, comm.wait(handles[k]).data);
    }
  comm.barrier(CommGroup::world(static_cast<int>(plan.ranks.size())));  // the lent buffers are free again
  return out;
}

}  // namespace pf
