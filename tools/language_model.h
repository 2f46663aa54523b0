// A trained language model run forward on one CPU device for sampling: its graph up to the logits its loss reads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "tools/kv_cache_decoder.h"
#include "tools/model_loading.h"
#include "tools/token_sampling.h"

namespace pf::tools {

/// What LanguageModel::generate draws.
struct Generation {
  /// Tokens drawn per sample, at most.
  int64_t tokens = 0;
  Sampling sampling;
  /// Sample s draws from std::mt19937_64(seed + s).
  uint64_t seed = 0;
  int64_t samples = 1;
  /// A sample ends after the drawn token that completes one of these
  /// sequences of ids (which may begin in the prompt).
  std::vector<std::vector<int32_t>> stop;
  /// The most sequences decoded at once over the cache (0: every sample of
  /// every prompt): each that ends makes room for the next (continuous
  /// batching), so the caches hold this many sequences, not all of them.
  int64_t max_batch = 0;
};

/// The sequences decoded at once for `jobs` samples in all: every one, or
/// at most `max_batch` of them (where it is above 0).
inline int64_t batch_width(int64_t jobs, int64_t max_batch) { return max_batch > 0 ? std::min(jobs, max_batch) : jobs; }

/// A model that reads token ids (its first input, i32[B,T]) and trains on
/// the cross_entropy of logits over a vocabulary of V ids at each of the T
/// positions (as examples/gpt.pf), compiled for one sequence (B = 1) up to
/// those logits, with saved weights, on the CPU kernels' threads.
///
/// A shorter sequence than T is read from position 0 with padding after it,
/// which only a causal model ignores: the constructor checks that the logits
/// at a position do not change with the tokens after it.
///
/// generate() reads each drawn token at the work of one position, over a
/// cache of the keys and values of those before it (KvCacheDecoder), where
/// the model allows: its sequence's length is a dimension, and its logits
/// read that way, compared with the whole sequence's at construction,
/// agree. Otherwise, and past T tokens, each token reads the latest T again.
class LanguageModel {
 public:
  /// `model` as load_model gives it (its batch is bound to one sequence
  /// here); `weights` a safetensors file or a
  /// checkpoint folder holding every parameter by name (more is ignored).
  /// Throws Error when the model reads no tokens, reads other inputs, has a
  /// batch of a fixed size or a loss that is no such cross_entropy, or is
  /// not causal, and when the weights lack a parameter or hold one of
  /// another type.
  LanguageModel(LoadedModel model, const std::string& weights);
  /// The same with the weights in memory, which the model keeps and reads
  /// in place; `what` names them in errors.
  LanguageModel(LoadedModel model, SafeTensors weights, const std::string& what);
  ~LanguageModel();
  LanguageModel(LanguageModel&&) noexcept;
  LanguageModel& operator=(LanguageModel&&) noexcept;

  const std::string& name() const;
  /// T: the most tokens the model reads at once.
  int64_t context() const;
  /// V: the token ids are 0 .. V - 1.
  int64_t vocabulary() const;

  /// The logits of the token after `tokens` (1 to T ids, each below V),
  /// valid until the next call.
  std::span<const float> next(std::span<const int32_t> tokens);

  /// Whether generate() reads tokens over a cache of keys and values.
  bool cached() const;
  /// Why the model cannot be read over a cache; "" where it can.
  const std::string& why_uncached() const;
  /// Turns the cache off (generate() then reads the latest T tokens for each
  /// one, as it does without a cache) or on again where the model allows.
  void use_cache(bool on);

  /// Why `samples` samples of each of `prompts` prompts cannot be decoded
  /// side by side over the cache, in a batch of at most `max_batch` (0: all
  /// of them) ("" where they can, or where there is no cache or the batch
  /// is of one); generate() then draws each prompt's samples together where
  /// they can be, else one after another: the same tokens, more slowly.
  /// Compiles (and checks) the batch's decoder the first time.
  const std::string& why_not_side_by_side(int64_t samples, int64_t prompts = 1, int64_t max_batch = 0);

  /// Called with each token as it is drawn: the sample it goes on, the token.
  using TokenSink = std::function<void(int64_t sample, int32_t token)>;

  /// `what.samples` continuations of `prompt`, each of up to `what.tokens`
  /// tokens drawn one after another as `what.sampling` says, each after the
  /// latest T tokens of the prompt and those drawn before it; sample s draws
  /// from std::mt19937_64(what.seed + s), so it is the same as a single
  /// sample of that seed. A sample ends early after the token that
  /// completes one of `what.stop` (kept in its tokens). Over a cache the
  /// samples are decoded side by side (a step reads one token of each, at
  /// little more than the cost of one), else one after another. `on_token`,
  /// if given, sees each token as it is drawn. Throws Error for an empty
  /// prompt or stop sequence, an id outside the vocabulary or fewer than one
  /// sample.
  std::vector<std::vector<int32_t>> generate(std::span<const int32_t> prompt, const Generation& what,
                                             const TokenSink& on_token = {});
  /// The same for several prompts at once: `what.samples` continuations of
  /// each, sample s of prompt i at index i * samples + s (and so named to
  /// `on_token`), each the same as that prompt's alone. Over a cache every
  /// prompt's samples are decoded side by side in one batch (of at most
  /// `what.max_batch`, the next sample taking the place of one that ends)
  /// where the model's sequences can read positions of their own (prompts
  /// of different lengths then go on from different positions), else prompt
  /// after prompt. Throws Error as the one-prompt form, for no prompt, and
  /// for a negative max_batch.
  std::vector<std::vector<int32_t>> generate(const std::vector<std::span<const int32_t>>& prompts,
                                             const Generation& what, const TokenSink& on_token = {});

 private:
  /// Throws Error for an id outside the vocabulary.
  void check_token(int32_t t) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::tools
