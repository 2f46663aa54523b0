// What every communicator shares.
#include "comm/communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "ir/diagnostic.h"

namespace pf {

CommGroup CommGroup::world(int size) {
  CommGroup g{"world", {}};
  for (int r = 0; r < size; ++r) g.ranks.push_back(r);
  return g;
}

bool CommGroup::contains(int rank) const { return std::find(ranks.begin(), ranks.end(), rank) != ranks.end(); }

int Communicator::start_all_reduce(const CommGroup& group, std::span<float> values) {
  all_reduce(group, values);
  return -1;
}

void Communicator::finish_all_reduce(int) {}

bool Communicator::ready(int) { return false; }

GroupBlocks group_blocks(const CommGroup& group, int rank, std::span<const int64_t> counts, size_t part,
                         size_t whole) {
  const auto at = std::find(group.ranks.begin(), group.ranks.end(), rank);
  if (at == group.ranks.end()) throw Error(fmt::format("rank {} is not in group '{}'", rank, group.name));
  GroupBlocks blocks;
  blocks.place = static_cast<size_t>(at - group.ranks.begin());
  blocks.begin.assign(counts.size() + 1, 0);
  for (size_t k = 0; k < counts.size(); ++k) blocks.begin[k + 1] = blocks.begin[k] + counts[k];
  if (counts.size() != group.ranks.size() || blocks.begin.back() != static_cast<int64_t>(whole) ||
      counts[blocks.place] != static_cast<int64_t>(part))
    throw Error(fmt::format("group '{}': blocks of {} values for {} members do not tile {} values with rank {}'s {}",
                            group.name, counts.size(), group.ranks.size(), whole, rank, part));
  return blocks;
}

namespace {

template <class T>
void gather_through_sum(Communicator& comm, const CommGroup& group, std::span<const T> part, std::span<T> whole,
                        std::span<const int64_t> counts) {
  const GroupBlocks blocks = group_blocks(group, comm.rank(), counts, part.size(), whole.size());
  const int64_t offset = blocks.begin[blocks.place];
  std::fill(whole.begin(), whole.end(), T(0));
  std::copy(part.begin(), part.end(), whole.begin() + offset);
  comm.all_reduce(group, whole);
}

template <class T>
void scatter_through_sum(Communicator& comm, const CommGroup& group, std::span<const T> whole, std::span<T> part,
                         std::span<const int64_t> counts) {
  const GroupBlocks blocks = group_blocks(group, comm.rank(), counts, part.size(), whole.size());
  const int64_t offset = blocks.begin[blocks.place];
  std::vector<T> sum(whole.begin(), whole.end());
  comm.all_reduce(group, std::span<T>(sum));
  std::copy(sum.begin() + offset, sum.begin() + offset + static_cast<int64_t>(part.size()), part.begin());
}

}  // namespace

void Communicator::all_gather(const CommGroup& group, std::span<const float> part, std::span<float> whole,
                              std::span<const int64_t> counts) {
  gather_through_sum(*this, group, part, whole, counts);
}
void Communicator::all_gather(const CommGroup& group, std::span<const double> part, std::span<double> whole,
                              std::span<const int64_t> counts) {
  gather_through_sum(*this, group, part, whole, counts);
}
void Communicator::reduce_scatter(const CommGroup& group, std::span<const float> whole, std::span<float> part,
                                  std::span<const int64_t> counts) {
  scatter_through_sum(*this, group, whole, part, counts);
}
void Communicator::reduce_scatter(const CommGroup& group, std::span<const double> whole, std::span<double> part,
                                  std::span<const int64_t> counts) {
  scatter_through_sum(*this, group, whole, part, counts);
}

}  // namespace pf
