// A causal language model read one token at a time over a cache of its keys and values.
#include "tools/kv_cache_decoder.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "backends/cpu/executor.h"
#include "ir/units.h"
#include "passes/pipeline.h"
#include "support/host_memory.h"

namespace pf::tools {

namespace {

/// The decode-step program for `fresh` new tokens of `batch` sequences: its
/// inputs are the tokens, their positions (each sequence's own, [batch,
/// fresh], or one row for all, [fresh]) and the caches; its results the
/// logits and each cache's new rows, in the caches' order.
struct StepProgram {
  int64_t fresh = 0, batch = 0;
  bool per_sequence = false;
  std::unique_ptr<cpu::Executor> step;
  std::vector<int32_t> tokens, positions;
};

/// One attention's keys or values for every position of every sequence:
/// `outer` blocks of `context` rows of `inner` elements (the positions' axis
/// splits the shape there, in either attention layout), the batch outermost,
/// so the first outer / sequences blocks are the first sequence's.
struct Cache {
  int64_t outer = 0, inner = 0;
  std::vector<float> rows;
};

constexpr int kCachesFirstInput = 2;
constexpr int kCachesFirstOutput = 1;

int64_t product(const Shape& s, size_t begin, size_t end) {
  return std::accumulate(s.begin() + static_cast<std::ptrdiff_t>(begin), s.begin() + static_cast<std::ptrdiff_t>(end),
                         int64_t{1}, std::multiplies<>());
}

}  // namespace

struct KvCacheDecoder::Impl {
  LoadedModel model;
  std::string length_dim;
  int64_t context = 0, sequences = 0, vocabulary = 0;
  std::vector<int64_t> filled;  // per sequence: the positions its cache holds
  std::vector<bool> kept;       // per sequence: whether next() keeps its rows
  bool per_sequence = false;    // whether the steps read each sequence's positions
  NamedWeights weights;
  std::vector<StepProgram> programs;  // compiled as first needed
  std::vector<Cache> caches;

  Impl(const LoadedModel& m, std::string dim, int64_t positions, NamedWeights w, int64_t batch)
      : model(m),
        length_dim(std::move(dim)),
        context(positions),
        sequences(batch),
        filled(static_cast<size_t>(batch), 0),
        kept(static_cast<size_t>(batch), true),
        weights(std::move(w)) {}

  StepProgram compile(int64_t fresh, int64_t batch) {
    LoadedModel at_length = model;
    at_length.binding[length_dim] = fresh;
    bind_batch(at_length, batch);
    PassContext ctx{at_length.binding};
    ctx.decode_context = context;
    run_pipeline(at_length.module, PassPipeline::model, ctx);
    run_passes(at_length.module, {"decode-step"}, ctx);
    StepProgram p;
    p.fresh = fresh;
    p.batch = batch;
    p.step = std::make_unique<cpu::Executor>(at_length.module.graph(), at_length.binding, DType::f32);
    p.per_sequence = p.step->input_type(1).rank() == 2;
    p.tokens.resize(static_cast<size_t>(batch * fresh));
    p.positions.resize(static_cast<size_t>(p.step->input_type(1).numel()));
    p.step->bind_input(0, p.tokens.data());
    p.step->bind_input(1, p.positions.data());
    for (const auto& [name, values] : weights) p.step->bind_param(name, values);
    return p;
  }

  /// The caches, shaped after the first program's inputs and results (one
  /// token of every sequence: each cache's positions' axis is the one where
  /// they differ).
  void make_caches(const StepProgram& p) {
    const int count = p.step->num_outputs() - kCachesFirstOutput;
    std::vector<Cache> shapes;
    double bytes = 0;
    for (int c = 0; c < count; ++c) {
      const TensorType& type = p.step->input_type(kCachesFirstInput + c);
      const Shape& cache = type.shape;
      const Shape& fresh = p.step->output_type(kCachesFirstOutput + c).shape;
      size_t axis = 0;
      while (axis < cache.size() && cache[axis] == fresh[axis]) ++axis;
      if (axis == cache.size())
        throw Error(fmt::format("the cache of keys and values {} holds no more positions than a step reads",
                                type.str()));
      if (axis == 0 || cache[0] != sequences)
        throw Error(fmt::format("the cache of keys and values {} does not lead with the batch of {} sequences",
                                type.str(), sequences));
      shapes.push_back({product(cache, 0, axis), product(cache, axis + 1, cache.size()), {}});
      bytes += static_cast<double>(type.bytes());
    }
    // Refused before a float is touched: zeroing more than the machine holds
    // would page for minutes or be killed.
    const double have = host_memory_bytes();
    if (have > 0 && bytes > have)
      throw Error(fmt::format("the caches of keys and values of {} sequences of {} positions take {}, more than this "
                              "machine's {}: decode fewer sequences at once",
                              sequences, context, format_bytes(bytes), format_bytes(have)));
    for (Cache& c : shapes) c.rows.resize(static_cast<size_t>(c.outer * context * c.inner));
    caches = std::move(shapes);
    vocabulary = p.step->output_type(0).shape.back();
    per_sequence = p.per_sequence;
  }

  /// A drawn token of every sequence, or a prompt (one sequence).
  StepProgram& program_for(int64_t n, int64_t batch) {
    const int64_t fresh = n == 1 ? 1 : program_length(n, context);
    for (StepProgram& p : programs)
      if (p.fresh == fresh && p.batch == batch) return p;
    programs.push_back(compile(fresh, batch));
    StepProgram& p = programs.back();
    if (caches.empty()) make_caches(p);
    return p;
  }

  /// Runs `p` over the caches from sequence `first` on (a program of fewer
  /// sequences reads their blocks) and keeps the new rows: a prompt's
  /// `prompt` rows (its one sequence's) from position 0 of every sequence
  /// of `into`, or a step's row of sequence i at position at[i] of into[i]
  /// (-1: not kept).
  void run(StepProgram& p, int64_t first, int64_t prompt, const std::vector<int64_t>& at,
           const std::vector<int64_t>& into) {
    for (size_t c = 0; c < caches.size(); ++c) {
      Cache& cache = caches[c];
      const int64_t blocks = cache.outer / sequences;
      p.step->bind_input(kCachesFirstInput + static_cast<int>(c),
                         cache.rows.data() + first * blocks * context * cache.inner);
    }
    p.step->run();
    for (size_t c = 0; c < caches.size(); ++c) {
      Cache& cache = caches[c];
      const auto* fresh_rows = static_cast<const float*>(p.step->output(kCachesFirstOutput + static_cast<int>(c)));
      const int64_t blocks = cache.outer / sequences;
      for (size_t i = 0; i < into.size(); ++i) {
        if (into[i] < 0) continue;
        const int64_t from = prompt > 0 ? 0 : static_cast<int64_t>(i);  // the program's sequence
        const int64_t rows = prompt > 0 ? prompt : 1, position = prompt > 0 ? 0 : at[i];
        for (int64_t o = 0; o < blocks; ++o)
          std::copy_n(fresh_rows + (from * blocks + o) * p.fresh * cache.inner, rows * cache.inner,
                      cache.rows.data() + ((into[i] * blocks + o) * context + position) * cache.inner);
      }
    }
  }

  /// Reads a prompt of n tokens from position 0 into sequences [first,
  /// first + count); returns the logits after its last token.
  std::span<const float> read_prompt(std::span<const int32_t> tokens, int64_t first, int64_t count) {
    const auto n = static_cast<int64_t>(tokens.size());
    StepProgram& p = program_for(n, 1);
    std::fill(p.tokens.begin(), p.tokens.end(), 0);
    std::copy(tokens.begin(), tokens.end(), p.tokens.begin());
    // The padding after the tokens reads positions of its own (below the
    // context, so inside any position table); no token sees it.
    std::iota(p.positions.begin(), p.positions.end(), 0);
    std::vector<int64_t> into(static_cast<size_t>(count));
    std::iota(into.begin(), into.end(), first);
    // The program writes sequence `first`'s rows; the rest are copies.
    run(p, first, n, {}, into);
    for (int64_t s = first; s < first + count; ++s) {
      filled[static_cast<size_t>(s)] = n;
      kept[static_cast<size_t>(s)] = true;
    }
    const auto* logits = static_cast<const float*>(p.step->output(0));
    return {logits + (n - 1) * vocabulary, static_cast<size_t>(vocabulary)};
  }

  /// Reads one token per sequence, each at its own next position (where the
  /// steps read one row of positions, the kept sequences share theirs).
  std::span<const float> read_step(std::span<const int32_t> tokens) {
    StepProgram& p = program_for(1, sequences);
    std::copy(tokens.begin(), tokens.end(), p.tokens.begin());
    std::vector<int64_t> at(static_cast<size_t>(sequences)), into(static_cast<size_t>(sequences));
    for (int64_t s = 0; s < sequences; ++s) {
      const auto i = static_cast<size_t>(s);
      // A sequence not kept reads position 0, which any cache holds.
      at[i] = kept[i] ? filled[i] : 0;
      into[i] = kept[i] ? s : -1;
      if (p.per_sequence) p.positions[i] = static_cast<int32_t>(at[i]);
    }
    if (!p.per_sequence) {
      const auto keeper = std::find(kept.begin(), kept.end(), true);
      const auto shared = keeper == kept.end() ? 0 : filled[static_cast<size_t>(keeper - kept.begin())];
      p.positions[0] = static_cast<int32_t>(shared);
    }
    run(p, 0, 0, at, into);
    for (int64_t s = 0; s < sequences; ++s)
      if (kept[static_cast<size_t>(s)]) ++filled[static_cast<size_t>(s)];
    return {static_cast<const float*>(p.step->output(0)), static_cast<size_t>(sequences * vocabulary)};
  }
};

int64_t program_length(int64_t n, int64_t context) {
  int64_t length = kShortestProgram;
  while (length < n) length *= 2;
  return std::min(length, context);
}

KvCacheDecoder::KvCacheDecoder(const LoadedModel& model, std::string length_dim, int64_t context,
                               const NamedWeights& weights, int64_t sequences)
    : impl_(std::make_unique<Impl>(model, std::move(length_dim), context, weights, sequences)) {
  if (context < 2) throw Error(fmt::format("a context of {} position leaves nothing to cache", context));
  if (sequences < 1) throw Error(fmt::format("a decoder of {} sequences decodes nothing", sequences));
  impl_->program_for(1, sequences);
}

KvCacheDecoder::~KvCacheDecoder() = default;
KvCacheDecoder::KvCacheDecoder(KvCacheDecoder&&) noexcept = default;
KvCacheDecoder& KvCacheDecoder::operator=(KvCacheDecoder&&) noexcept = default;

int64_t KvCacheDecoder::context() const { return impl_->context; }
int64_t KvCacheDecoder::sequences() const { return impl_->sequences; }
bool KvCacheDecoder::per_sequence() const { return impl_->per_sequence; }
int64_t KvCacheDecoder::filled(int64_t sequence) const { return impl_->filled.at(static_cast<size_t>(sequence)); }

std::span<const float> KvCacheDecoder::start(std::span<const int32_t> tokens, int64_t first, int64_t count) {
  Impl& m = *impl_;
  if (tokens.empty() || static_cast<int64_t>(tokens.size()) > m.context)
    throw Error(fmt::format("the cache reads 1 to {} tokens at once, not {}", m.context, tokens.size()));
  if (count < 0) count = m.sequences - first;
  if (first < 0 || count < 1 || first + count > m.sequences)
    throw Error(fmt::format("sequences {} to {} are not among the decoder's {}", first, first + count - 1,
                            m.sequences));
  if (!m.per_sequence && count != m.sequences)
    throw Error("the model's steps read one row of positions for every sequence: start them all from one prompt");
  return m.read_prompt(tokens, first, count);
}

void KvCacheDecoder::retire(int64_t sequence) {
  if (sequence < 0 || sequence >= impl_->sequences)
    throw Error(fmt::format("sequence {} is not among the decoder's {}", sequence, impl_->sequences));
  impl_->kept[static_cast<size_t>(sequence)] = false;
}

std::span<const float> KvCacheDecoder::next(std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  if (static_cast<int64_t>(tokens.size()) != m.sequences)
    throw Error(fmt::format("a step reads a token of each of {} sequences, not {} tokens", m.sequences,
                            tokens.size()));
  for (int64_t s = 0; s < m.sequences; ++s)
    if (m.kept[static_cast<size_t>(s)] && m.filled[static_cast<size_t>(s)] >= m.context)
      throw Error(fmt::format("the cache holds {} positions, all filled{}: start again from the latest tokens",
                              m.context, m.sequences > 1 ? fmt::format(" for sequence {}", s) : ""));
  return m.read_step(tokens);
}

}  // namespace pf::tools
