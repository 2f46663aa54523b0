// An optimizer's state shared out between data-parallel replicas (ZeRO stage
// 1, Megatron-LM's distributed optimizer): every replica holds the whole
// weights and the whole summed gradients, but keeps optimizer state for, and
// steps, only its share of the elements; the replicas then copy each other
// their updated shares. Each element's update is the one a whole optimizer
// would make, so the weights stay bit for bit the same.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "runtime/optimizer.h"

namespace pf {

/// The elements a replica's share holds of one parameter.
struct ShardPiece {
  int replica = 0;
  size_t param = 0;    // index into the parameter list
  int64_t offset = 0;  // its first element, in the parameter laid out flat
  int64_t count = 0;
};

/// Where shares may begin: a multiple of 16 floats, 64 bytes (a cache line,
/// and the widest vector the update runs with).
inline constexpr int64_t kShardAlignment = 16;

/// The parameters laid end to end, in order, and cut into `replicas` runs of
/// nearly equal length, each cut at a multiple of kShardAlignment: replica r
/// steps run r. Returns the pieces in replica order, each replica's in
/// parameter order; every element lies in exactly one piece, and no piece
/// is empty (a replica may have none when there are fewer elements than
/// replicas x kShardAlignment).
std::vector<ShardPiece> shard_pieces(std::span<const Param> params, int replicas);

/// The views an optimizer of `replica`'s share steps: a piece covering all
/// of a parameter is the parameter's own view; a piece of one is a flat view
/// of its elements (Param::whole).
std::vector<Param> shard_params(std::span<const Param> params, int replica, int replicas);

/// Which elements of a stage's parameters one replica's optimizer steps.
/// The parameters every replica holds are cut into `of` shares, this replica
/// stepping share `index`. Under expert parallelism a replica's own blocks
/// of the experts (`own`) differ from group to group position, so only the
/// replicas holding the same block share them: `own_of` of them, this one
/// stepping share `own_index`. The default steps everything.
struct OptimizerShare {
  int index = 0, of = 1;
  std::vector<std::string> own;
  int own_index = 0, own_of = 1;
};

/// `params` parted into the ones every replica holds and a replica's own
/// (named in `own`), each in their order.
std::pair<std::vector<Param>, std::vector<Param>> part_own(std::span<const Param> params,
                                                            const std::vector<std::string>& own);

/// The views an optimizer of `share` steps: the shared parameters' share,
/// then the own ones'. `params` as they are when nothing is sharded.
std::vector<Param> share_params(std::span<const Param> params, const OptimizerShare& share);

/// How many floats of optimizer state share `index` of `of` over `params`
/// holds, `slots` per element.
int64_t share_floats(std::span<const Param> params, int index, int of, size_t slots);

}  // namespace pf
