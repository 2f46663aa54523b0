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
/// It decodes `sequences` sequences side by side: each prompt is read once
/// and its cache rows copied to every sequence that goes on from it, then
/// every step reads one token per sequence in one program of batch
/// `sequences`, whose products read each weight once for all of them. Where
/// the model's rotations and attentions lead with the batch, each sequence
/// reads its own positions, so prompts of different lengths decode side by
/// side; otherwise every sequence starts from the same prompt.
class KvCacheDecoder {
 public:
  /// `model` with `length_dim` the dimension the sequence's length binds
  /// (the programs rebind it to the tokens read at once, and the batch to
  /// one sequence for a prompt, to `sequences` for the steps); `weights`
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
  /// The sequences each step reads a token of.
  int64_t sequences() const;
  /// Whether each sequence reads positions of its own (start() may then
  /// give sequences different prompts).
  bool per_sequence() const;
  /// The tokens `sequence` has read since its last start(): its cache's
  /// filled positions.
  int64_t filled(int64_t sequence = 0) const;

  /// Empties the caches of sequences [first, first + count) (count -1: up
  /// to the last) and reads `tokens` (1 to context ids, each below the
  /// vocabulary) from position 0 as the start of each; returns the logits
  /// after the last of them (one row), valid until the next call. Throws
  /// Error for a range outside the sequences, or not all of them where the
  /// sequences share their positions.
  std::span<const float> start(std::span<const int32_t> tokens, int64_t first = 0, int64_t count = -1);
  /// Stops keeping `sequence`'s rows: next() still reads a token for it but
  /// keeps nothing, and its logits mean nothing, until start() gives it a
  /// prompt again (a sequence that has outgrown the cache).
  void retire(int64_t sequence);
  /// Reads one more token per sequence (`tokens`, one id each), each at its
  /// filled() position (below context() for each one kept); returns the
  /// logits after each, a row of the vocabulary's size per sequence.
  std::span<const float> next(std::span<const int32_t> tokens);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::tools
