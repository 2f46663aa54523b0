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

}  // namespace pf
