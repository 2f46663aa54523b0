// Cutting a stage's parameters into the replicas' shares of its optimizer.
#include "runtime/optimizer_shard.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"

namespace pf {

std::vector<ShardPiece> shard_pieces(std::span<const Param> params, int replicas) {
  if (replicas < 1) throw Error(fmt::format("an optimizer shared by {} replicas", replicas));
  int64_t total = 0;
  for (const Param& p : params) total += p.numel();
  // Run r is [cut[r], cut[r + 1]).
  std::vector<int64_t> cut(static_cast<size_t>(replicas) + 1, total);
  cut[0] = 0;
  for (int r = 1; r < replicas; ++r) {
    const int64_t even = total / replicas * r + total % replicas * r / replicas;  // r * total / replicas, exactly
    cut[static_cast<size_t>(r)] = std::min(total, (even + kShardAlignment / 2) / kShardAlignment * kShardAlignment);
  }
  std::vector<ShardPiece> out;
  for (int r = 0; r < replicas; ++r) {
    int64_t start = 0;  // of the current parameter, in the flat layout
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t n = params[i].numel();
      const int64_t lo = std::max(start, cut[static_cast<size_t>(r)]);
      const int64_t hi = std::min(start + n, cut[static_cast<size_t>(r) + 1]);
      if (lo < hi) out.push_back({r, i, lo - start, hi - lo});
      start += n;
    }
  }
  return out;
}

std::vector<Param> shard_params(std::span<const Param> params, int replica, int replicas) {
  std::vector<Param> out;
  for (const ShardPiece& piece : shard_pieces(params, replicas)) {
    if (piece.replica != replica) continue;
    const Param& p = params[piece.param];
    if (piece.count == p.numel()) {
      out.push_back(p);
      continue;
    }
    Param view = p;
    view.shape = {piece.count};
    view.value = p.value + piece.offset;
    view.grad = p.grad + piece.offset;
    view.offset = piece.offset;
    view.whole = p.shape;
    out.push_back(std::move(view));
  }
  return out;
}

std::pair<std::vector<Param>, std::vector<Param>> part_own(std::span<const Param> params,
                                                            const std::vector<std::string>& own) {
  std::pair<std::vector<Param>, std::vector<Param>> out;
  for (const Param& p : params)
    (std::find(own.begin(), own.end(), p.name) == own.end() ? out.first : out.second).push_back(p);
  return out;
}

std::vector<Param> share_params(std::span<const Param> params, const OptimizerShare& share) {
  if (share.of == 1 && share.own_of == 1) return {params.begin(), params.end()};
  auto [shared, own] = part_own(params, share.own);
  std::vector<Param> out = shard_params(shared, share.index, share.of);
  for (Param& p : shard_params(own, share.own_index, share.own_of)) out.push_back(std::move(p));
  return out;
}

int64_t share_floats(std::span<const Param> params, int index, int of, size_t slots) {
  int64_t floats = 0;
  for (const ShardPiece& piece : shard_pieces(params, of))
    if (piece.replica == index) floats += piece.count;
  return floats * static_cast<int64_t>(slots);
}

}  // namespace pf
