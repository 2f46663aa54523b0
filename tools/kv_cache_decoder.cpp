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
/// inputs are the tokens, their positions (the same for every sequence) and
/// the caches; its results the logits and each cache's new rows, in the
/// caches' order.
struct StepProgram {
  int64_t fresh = 0, batch = 0;
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
  int64_t context = 0, sequences = 0, vocabulary = 0, filled = 0;
  NamedWeights weights;
  std::vector<StepProgram> programs;  // compiled as first needed
  std::vector<Cache> caches;

  Impl(const LoadedModel& m, std::string dim, int64_t positions, NamedWeights w, int64_t batch)
      : model(m), length_dim(std::move(dim)), context(positions), sequences(batch), weights(std::move(w)) {}

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
    p.tokens.resize(static_cast<size_t>(batch * fresh));
    p.positions.resize(static_cast<size_t>(fresh));
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
  }

  /// A drawn token of every sequence, or a prompt (one sequence).
  StepProgram& program_for(int64_t n, int64_t batch) {
    const int64_t fresh = n == 1 ? 1 : program_length(n, context);
    for (StepProgram& p : programs)
      if (p.fresh == fresh && p.batch == batch) return p;
    programs.push_back(compile(fresh, batch));
    StepProgram& p = programs.back();
    if (caches.empty()) make_caches(p);
    // A program of fewer sequences reads the first ones' blocks.
    for (size_t c = 0; c < caches.size(); ++c)
      p.step->bind_input(kCachesFirstInput + static_cast<int>(c), caches[c].rows.data());
    return p;
  }

  /// Reads `tokens`, n per sequence of `batch` (1 or all), at positions
  /// filled .. filled + n - 1; their keys and values join the caches, a
  /// single sequence's those of every sequence. Returns the logits after
  /// the last token of each sequence read.
  std::span<const float> read(std::span<const int32_t> tokens, int64_t batch) {
    const auto n = static_cast<int64_t>(tokens.size()) / batch;
    StepProgram& p = program_for(n, batch);
    std::fill(p.tokens.begin(), p.tokens.end(), 0);
    for (int64_t s = 0; s < batch; ++s)
      std::copy_n(tokens.begin() + s * n, n, p.tokens.begin() + s * p.fresh);
    // The padding after the tokens reads positions of its own (below the
    // context, so inside any position table); no token sees it.
    std::iota(p.positions.begin(), p.positions.end(), static_cast<int32_t>(filled));
    p.step->run();
    for (size_t c = 0; c < caches.size(); ++c) {
      Cache& cache = caches[c];
      const auto* fresh_rows = static_cast<const float*>(p.step->output(kCachesFirstOutput + static_cast<int>(c)));
      const int64_t outer = cache.outer / sequences * batch, rows = n * cache.inner;
      for (int64_t o = 0; o < cache.outer; ++o)
        std::copy_n(fresh_rows + (o % outer) * p.fresh * cache.inner, rows,
                    cache.rows.data() + (o * context + filled) * cache.inner);
    }
    filled += n;
    const auto* logits = static_cast<const float*>(p.step->output(0));
    if (p.fresh == 1) return {logits, static_cast<size_t>(batch * vocabulary)};
    return {logits + (n - 1) * vocabulary, static_cast<size_t>(vocabulary)};
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
int64_t KvCacheDecoder::filled() const { return impl_->filled; }

std::span<const float> KvCacheDecoder::start(std::span<const int32_t> tokens) {
  if (tokens.empty() || static_cast<int64_t>(tokens.size()) > impl_->context)
    throw Error(fmt::format("the cache reads 1 to {} tokens at once, not {}", impl_->context, tokens.size()));
  impl_->filled = 0;
  return impl_->read(tokens, 1);
}

std::span<const float> KvCacheDecoder::next(std::span<const int32_t> tokens) {
  if (static_cast<int64_t>(tokens.size()) != impl_->sequences)
    throw Error(fmt::format("a step reads a token of each of {} sequences, not {} tokens", impl_->sequences,
                            tokens.size()));
  if (impl_->filled >= impl_->context)
    throw Error(fmt::format("the cache holds {} positions, all filled: start again from the latest tokens",
                            impl_->context));
  return impl_->read(tokens, impl_->sequences);
}

}  // namespace pf::tools
