// A causal language model read one token at a time over a cache of its keys and values.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tools/model_loading.h"

namespace pf::tools {

/// The positions of the program that reads `n` tokens (1 to context) at
/// once: the next power of two that holds them, at least
/// kShortestProgram (below it a forward costs little more than its
/// overheads), at most `context`.
inline constexpr int64_t kShortestProgram = 16;
int64_t program_length(int64_t n, int64_t context);

/// Parameters' values by name, held elsewhere.
using NamedWeights = std::vector<std::pair<std::string, float*>>;

/// Incremental decoding: the keys and values each attention computed for
/// the tokens read so far stay in a cache of `context` positions, so the
/// next token costs the work of one position (the decode-step pass's
/// programs, on the CPU executor) instead of all of them again.
///
/// It decodes `sequences` sequences side by side from one prompt: the
/// prompt is read once and its cache rows copied to each, then every step
/// reads one token per sequence in one program of batch `sequences`, whose
/// products read each weight once for all of them.
class KvCacheDecoder {
 public:
  /// `model` with `length_dim` the dimension the sequence's length binds
  /// (the programs rebind it to the tokens read at once, and the batch to
  /// one sequence for the prompt, to `sequences` for the steps); `weights`
  /// every parameter, bound to the programs (never written) and kept by the
  /// caller for the decoder's lifetime. Throws Error where the decode-step
  /// pass or the verifier refuses the model.
  KvCacheDecoder(const LoadedModel& model, std::string length_dim, int64_t context, const NamedWeights& weights,
                 int64_t sequences = 1);
  ~KvCacheDecoder();
  KvCacheDecoder(KvCacheDecoder&&) noexcept;
  KvCacheDecoder& operator=(KvCacheDecoder&&) noexcept;

  /// The positions the cache holds.
  int64_t context() const;
  /// The tokens read since the last start(): the cache's filled positions.
  int64_t filled() const;

  /// Empties the cache and reads `tokens` (1 to context ids, each below the
  /// vocabulary) from position 0 as the start of every sequence; returns the
  /// logits after the last of them (one row: every sequence's), valid until
  /// the next call.
  std::span<const float> start(std::span<const int32_t> tokens);
  /// Reads one more token per sequence (`tokens`, one id each) at position
  /// filled() (below context()); returns the logits after each, a row of
  /// the vocabulary's size per sequence.
  std::span<const float> next(std::span<const int32_t> tokens);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::tools
