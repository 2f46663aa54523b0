// A trained language model run forward on one CPU device for sampling.
#include "tools/language_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <new>
#include <random>
#include <vector>

#include "backends/cpu/executor.h"
#include "ir/verifier.h"
#include "passes/pipeline.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"

namespace pf::tools {

namespace {

/// The cross_entropy that `v` is, or is a term of through sums (a language
/// model's loss plus an auxiliary one, such as a mixture of experts' load
/// balancing loss); nullptr when there is none.
const Op* cross_entropy_in(const Function& g, ValueId v) {
  const Value& value = g.values[static_cast<size_t>(v)];
  if (value.def_op < 0) return nullptr;
  const Op& op = g.ops[static_cast<size_t>(value.def_op)];
  if (op.kind == OpKind::cross_entropy) return &op;
  if (op.kind != OpKind::add) return nullptr;
  for (ValueId term : op.operands)
    if (const Op* found = cross_entropy_in(g, term)) return found;
  return nullptr;
}

/// The value the graph's loss takes its logits from: the first operand of
/// the cross_entropy that computes the loss (or a term of it).
ValueId logits_of_loss(const Function& g) {
  const Value& loss = g.values[static_cast<size_t>(g.returns.at(0))];
  const Op* op = cross_entropy_in(g, g.returns.at(0));
  if (!op) {
    const Op* def = loss.def_op >= 0 ? &g.ops[static_cast<size_t>(loss.def_op)] : nullptr;
    throw Error(fmt::format("@{} is not a language model: its loss %{} is {}, not the cross_entropy of logits over a "
                            "vocabulary (or a sum of one and other terms)",
                            g.name, loss.name, def ? std::string(op_name(def->kind)) : "an input"));
  }
  return op->operands[0];
}

/// The graph cut at its logits, compiled for sequences of one length.
struct LogitsProgram {
  int64_t length = 0;  // T of this program
  std::unique_ptr<cpu::Executor> forward;
  std::vector<int32_t> tokens;                        // its first input, [1, T]
  std::vector<std::vector<std::byte>> unread_inputs;  // the targets: bound, never read
};

/// `model` (its batch bound to 1) through the model pipeline, its graph
/// returning the logits its loss reads instead of the loss, on the CPU.
/// Sets `vocabulary` from the logits.
LogitsProgram compile_logits(LoadedModel model, int64_t& vocabulary) {
  PassContext ctx{model.binding};
  run_pipeline(model.module, PassPipeline::model, ctx);
  Function& g = model.module.graph();
  LogitsProgram out;
  out.length = g.type_of(g.args[0]).shape[1];
  const ValueId logits = logits_of_loss(g);
  const TensorType& logits_type = g.type_of(logits);
  vocabulary = logits_type.rank() > 0 ? logits_type.shape.back() : 0;
  if (logits_type.dtype != DType::f32 || vocabulary <= 0 || logits_type.numel() != out.length * vocabulary)
    throw Error(fmt::format("@{}'s logits %{} are {}: sampling reads f32 logits of every one of its {} positions",
                            g.name, g.values[static_cast<size_t>(logits)].name, logits_type.str(), out.length));

  // The graph up to the logits: the loss and whatever only it read go.
  g.returns = {logits};
  g.result_types = {SymType::from(logits_type)};
  make_dce_pass()->run(model.module, ctx);
  verify_module(model.module, model.binding);
  const std::vector<std::vector<int>> users = g.users();
  for (size_t i = 1; i < g.args.size(); ++i)
    if (!users[static_cast<size_t>(g.args[i])].empty())
      throw Error(fmt::format("@{} reads %{} besides its tokens on the way to its logits: sampling gives a model its "
                              "tokens only",
                              g.name, g.values[static_cast<size_t>(g.args[i])].name));
  out.forward = std::make_unique<cpu::Executor>(g, model.binding, DType::f32);
  out.tokens.resize(static_cast<size_t>(out.length));
  out.forward->bind_input(0, out.tokens.data());
  for (int i = 1; i < static_cast<int>(g.args.size()); ++i) {
    out.unread_inputs.emplace_back(static_cast<size_t>(out.forward->input_type(i).bytes()));
    out.forward->bind_input(i, out.unread_inputs.back().data());
  }
  return out;
}

/// Every parameter's type in `m` as verified, in op order.
std::vector<TensorType> parameter_types(const Module& m) {
  std::vector<TensorType> out;
  for (const Function& f : m.functions)
    for (const Op& op : f.ops)
      if (op.kind == OpKind::param) out.push_back(f.type_of(op.results[0]));
  return out;
}

/// The dimension that T, the sequence's length, binds in `model` when a
/// shorter binding of it verifies and changes no parameter's type (a causal
/// model then computes a position's logits alike at any length); "" when T
/// is a number, or a sum of dimensions, or shapes the weights.
std::string shortenable_length(const LoadedModel& model) {
  const Function& g = model.module.graph();
  const DimExpr& length = g.arg_types[0].dims[1];
  if (length.kind() != DimExpr::Kind::symbol) return "";
  LoadedModel shorter = model;
  shorter.binding[length.name()] = std::min<int64_t>(kShortestProgram, model.binding.at(length.name()));
  try {
    verify_module(shorter.module, shorter.binding, VerifyOptions{true});
  } catch (const Error&) {
    return "";
  }
  return parameter_types(shorter.module) == parameter_types(model.module) ? length.name() : "";
}

/// Whether logits that differ by at most `change` where the largest is
/// `scale` agree within `tolerance` of that scale (false for NaN).
bool agree(float change, float scale, float tolerance) { return change <= tolerance * std::max(scale, 1.0f); }

/// Whether `history` ends with one of `stop`.
bool ends_with_stop(const std::vector<int32_t>& history, const std::vector<std::vector<int32_t>>& stop) {
  return std::any_of(stop.begin(), stop.end(), [&](const std::vector<int32_t>& ids) {
    return ids.size() <= history.size() && std::equal(ids.rbegin(), ids.rend(), history.rbegin());
  });
}

}  // namespace

struct LanguageModel::Impl {
  std::string name;
  int64_t context = 0, vocabulary = 0;
  LoadedModel model;                        // as loaded, its batch bound to 1: compiled for each length
  std::string length_dim;                   // the dimension T binds, where shorter programs are possible
  SafeTensors weights_file;                 // every parameter, as loaded
  NamedWeights weights;                     // where each is in weights_file
  std::vector<LogitsProgram> programs;      // compiled as first needed
  std::unique_ptr<KvCacheDecoder> decoder;  // where the model reads token by token alike
  std::string why_uncached;                 // where it does not
  bool use_cache = true;

  /// The decoder of a number of samples side by side, or why there is none.
  struct SideBySide {
    std::unique_ptr<KvCacheDecoder> decoder;
    std::string why_not;
  };
  std::map<int64_t, SideBySide> side_by_side;  // by the number of samples, made as first asked for

  /// The program for sequences of up to `n` tokens: compiled for the
  /// shortest power of two that holds them (at least kShortestProgram), so
  /// that a short sequence does not pay for T positions (a causal model's
  /// logits at a position are the same whatever comes after it; only the
  /// rounding of longer sums may differ); for T where T cannot change.
  LogitsProgram& program_for(int64_t n) {
    const int64_t length = length_dim.empty() ? context : program_length(n, context);
    for (LogitsProgram& p : programs)
      if (p.length == length) return p;
    LoadedModel at_length = model;
    if (length != context) {
      at_length.binding[length_dim] = length;
      try {
        verify_module(at_length.module, at_length.binding, VerifyOptions{true});
      } catch (const Error&) {
        length_dim.clear();  // this length does not verify (shortenable_length tried only the shortest)
        return program_for(n);
      }
    }
    programs.push_back(compile_logits(std::move(at_length), vocabulary));
    for (const auto& [p, values] : weights) programs.back().forward->bind_param(p, values);
    return programs.back();
  }

  const float* run(LogitsProgram& p, std::span<const int32_t> ids, int32_t padding) {
    std::fill(p.tokens.begin(), p.tokens.end(), padding);
    std::copy(ids.begin(), ids.end(), p.tokens.begin());
    p.forward->run();
    return static_cast<const float*>(p.forward->output(0));
  }

  /// Raises `scale` to the largest magnitude of a row of logits `want` and
  /// `change` to the largest difference of `got` from it.
  void compare_logits(const float* want, const float* got, float& scale, float& change) const {
    for (int64_t v = 0; v < vocabulary; ++v) {
      scale = std::max(scale, std::abs(want[v]));
      change = std::max(change, std::abs(got[v] - want[v]));
    }
  }

  /// The logits at position 0 must not change with the tokens after it (in
  /// the shortest program: the same ops as T's, for less work).
  void check_causal() {
    if (context < 2) return;
    const int32_t first[] = {0};
    LogitsProgram& shortest = program_for(1);
    const float* row = run(shortest, first, 0);
    const std::vector<float> with_zeros(row, row + vocabulary);
    row = run(shortest, first, static_cast<int32_t>(vocabulary - 1));
    float scale = 0, change = 0;
    compare_logits(with_zeros.data(), row, scale, change);
    if (!agree(change, scale, 1e-5f))
      throw Error(fmt::format("@{} is not causal: the logits at a position change with the tokens after it (by "
                              "{:.3g}), and sampling reads a shorter sequence with padding after it; mask the "
                              "attention with causal_mask, as examples/gpt.pf does",
                              name, change));
  }

  /// The decoder, where the model compiles into decode steps whose logits,
  /// read two tokens at once and then one by one, are the whole sequence's
  /// (the pass cannot see every op that mixes positions; this catches them).
  void make_decoder() {
    if (length_dim.empty()) {
      why_uncached = "its sequence's length is a number, not a dimension that a step of one token can rebind";
      return;
    }
    try {
      decoder = std::make_unique<KvCacheDecoder>(model, length_dim, context, weights);
    } catch (const Error& e) {
      why_uncached = e.what();
      return;
    }
    std::vector<int32_t> ids(static_cast<size_t>(std::min<int64_t>(context, 6)));
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = static_cast<int32_t>((7 * i + 3) % static_cast<size_t>(vocabulary));
    const float* whole = run(program_for(static_cast<int64_t>(ids.size())), ids, 0);
    float scale = 0, change = 0;
    for (size_t i = 1; i < ids.size(); ++i) {
      const std::span<const float> step = i == 1 ? decoder->start({ids.data(), 2}) : decoder->next({&ids[i], 1});
      compare_logits(whole + static_cast<int64_t>(i) * vocabulary, step.data(), scale, change);
    }
    if (!agree(change, scale, 1e-4f)) {
      why_uncached = fmt::format("its logits read token by token differ from the whole sequence's by {:.3g}: an op "
                                 "besides attention mixes positions",
                                 change);
      decoder.reset();
    }
  }

  /// The decoder of `sequences` side by side, made the first time and
  /// checked against the one-sequence decoder: a prompt for each (of
  /// different lengths where the sequences hold positions of their own, else
  /// one for all), then another token for each sequence, twice, must give
  /// each sequence the logits it has alone (an op that mixes the batch's
  /// sequences would not).
  SideBySide& side_by_side_for(int64_t sequences) {
    auto [it, made] = side_by_side.try_emplace(sequences);
    SideBySide& out = it->second;
    if (!made || !decoder || sequences == 1) return out;
    try {
      out.decoder = std::make_unique<KvCacheDecoder>(model, length_dim, context, weights, sequences);
    } catch (const Error& e) {
      out.why_not = e.what();
      return out;
    } catch (const std::bad_alloc&) {
      out.why_not = fmt::format("decoding {} sequences at once needs more memory than this machine gives", sequences);
      return out;
    }
    KvCacheDecoder& together = *out.decoder;
    const int64_t longest = together.per_sequence() ? std::min<int64_t>(3, context - 1) : 1;
    const auto prompt_of = [&](int64_t s) {
      std::vector<int32_t> ids(static_cast<size_t>(1 + s % longest));
      for (size_t i = 0; i < ids.size(); ++i)
        ids[i] = static_cast<int32_t>((3 * i + 1 + static_cast<size_t>(s)) % static_cast<size_t>(vocabulary));
      return ids;
    };
    const int64_t steps = std::min<int64_t>(context - longest, 2);
    std::vector<int32_t> tokens(static_cast<size_t>(sequences * steps));
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<int32_t>((5 * i + 2) % static_cast<size_t>(vocabulary));
    std::vector<float> rows;
    if (together.per_sequence())
      for (int64_t s = 0; s < sequences; ++s) together.start(prompt_of(s), s, 1);
    else
      together.start(prompt_of(0));
    for (int64_t step = 0; step < steps; ++step) {
      const std::span<const float> next =
          together.next({tokens.data() + step * sequences, static_cast<size_t>(sequences)});
      rows.insert(rows.end(), next.begin(), next.end());
    }
    float scale = 0, change = 0;
    for (int64_t s = 0; s < sequences; ++s) {
      decoder->start(prompt_of(together.per_sequence() ? s : 0));
      for (int64_t step = 0; step < steps; ++step) {
        const std::span<const float> alone = decoder->next({&tokens[static_cast<size_t>(step * sequences + s)], 1});
        compare_logits(alone.data(), rows.data() + (step * sequences + s) * vocabulary, scale, change);
      }
    }
    if (!agree(change, scale, 1e-4f)) {
      out.why_not = fmt::format("its sequences read side by side differ from each read alone by {:.3g}: an op mixes "
                                "the batch's sequences",
                                change);
      out.decoder.reset();
    }
    return out;
  }

  /// The logits after `tokens` (1 to T ids), read whole.
  std::span<const float> read_whole(std::span<const int32_t> tokens) {
    const auto n = static_cast<int64_t>(tokens.size());
    const float* logits = run(program_for(n), tokens, 0);
    return {logits + (n - 1) * vocabulary, static_cast<size_t>(vocabulary)};
  }

  /// `what.samples` continuations of each of `prompts` (checked) from
  /// `what.seed` on, sample s of prompt i the job i * samples + s: side by
  /// side over `cache` where given, each of its sequences (slots) holding a
  /// job while it fits in the cache (read whole from then on) and taking the
  /// next job when it ends (the slots read positions of their own where
  /// they are fewer than the jobs, or there are several prompts); else each
  /// job read whole, all side by side.
  std::vector<std::vector<int32_t>> draw(const std::vector<std::span<const int32_t>>& prompts,
                                         const Generation& what, KvCacheDecoder* cache, const TokenSink& on_token) {
    struct Job {
      size_t prompt = 0;
      std::vector<int32_t> history;
      std::mt19937_64 rng;
      int64_t drawn = 0;
      bool cached = false;  // read over its slot's cache
    };
    const auto samples = static_cast<size_t>(what.samples);
    const auto whole = static_cast<size_t>(context), v = static_cast<size_t>(vocabulary);
    std::vector<Job> jobs;
    for (size_t i = 0; i < prompts.size(); ++i)
      for (size_t s = 0; s < samples; ++s)
        jobs.push_back({i, {prompts[i].begin(), prompts[i].end()}, std::mt19937_64(what.seed + s), 0, false});
    const size_t slots = cache ? static_cast<size_t>(cache->sequences()) : jobs.size();
    constexpr size_t kFree = static_cast<size_t>(-1);
    std::vector<size_t> job_of(slots, kFree);
    std::vector<int32_t> tokens(slots, 0);  // each slot's last drawn token, read by the next step
    std::vector<float> rows;                // the last step's logits, a row per slot
    std::vector<std::vector<float>> started(slots);  // a slot's prompt logits, until its first draw
    size_t next_job = 0;
    for (;;) {
      // Free slots take the next jobs; consecutive ones of one prompt read it
      // once (all the samples of one prompt, at first).
      for (size_t slot = 0; slot < slots && next_job < jobs.size();) {
        if (job_of[slot] != kFree) {
          ++slot;
          continue;
        }
        size_t count = 0;
        const size_t prompt = jobs[next_job].prompt;
        while (slot + count < slots && job_of[slot + count] == kFree && next_job + count < jobs.size() &&
               jobs[next_job + count].prompt == prompt)
          ++count;
        const bool fits = cache && prompts[prompt].size() <= whole;
        std::span<const float> logits;
        if (fits) logits = cache->start(prompts[prompt], static_cast<int64_t>(slot), static_cast<int64_t>(count));
        for (size_t c = 0; c < count; ++c) {
          job_of[slot + c] = next_job;
          jobs[next_job].cached = fits;
          if (fits) started[slot + c].assign(logits.begin(), logits.end());
          if (cache && !fits) cache->retire(static_cast<int64_t>(slot + c));
          ++next_job;
        }
        slot += count;
      }
      bool any = false, on_cache = false;
      for (size_t slot = 0; slot < slots; ++slot) {
        if (job_of[slot] == kFree) continue;
        any = true;
        Job& job = jobs[job_of[slot]];
        std::span<const float> logits;
        if (!job.cached) {
          // The model reads at most its context: the latest tokens, all again.
          const size_t seen = std::min(job.history.size(), whole);
          logits = read_whole({job.history.data() + job.history.size() - seen, seen});
        } else if (!started[slot].empty()) {
          logits = started[slot];
        } else {
          logits = std::span<const float>(rows).subspan(slot * v, v);
        }
        tokens[slot] = static_cast<int32_t>(draw_token(logits, what.sampling, job.rng));
        started[slot].clear();
        job.history.push_back(tokens[slot]);
        ++job.drawn;
        if (on_token) on_token(static_cast<int64_t>(job_of[slot]), tokens[slot]);
        const bool ended = job.drawn == what.tokens || ends_with_stop(job.history, what.stop);
        // A job that ends frees its slot; one that outgrows the cache is read
        // whole from then on. Either way the cache no longer keeps its rows.
        if (job.cached && (ended || job.history.size() > whole)) {
          job.cached = false;
          cache->retire(static_cast<int64_t>(slot));
        }
        if (ended) job_of[slot] = kFree;
        on_cache = on_cache || job.cached;
      }
      if (!any) break;
      if (on_cache) {
        const std::span<const float> step = cache->next(tokens);
        rows.assign(step.begin(), step.end());
      }
    }
    std::vector<std::vector<int32_t>> out;
    for (Job& job : jobs) {
      const auto prompt = static_cast<std::ptrdiff_t>(prompts[job.prompt].size());
      out.emplace_back(job.history.begin() + prompt, job.history.end());
    }
    return out;
  }
};

LanguageModel::LanguageModel(LoadedModel model, const std::string& weights)
    : LanguageModel(std::move(model), read_weights(weights), weights) {}

LanguageModel::LanguageModel(LoadedModel model, SafeTensors weights, const std::string& what)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  {
    const Function& g = model.module.graph();
    if (g.args.size() < 2 || g.arg_types[0].dtype != DType::i32 || g.arg_types[0].dims.size() != 2)
      throw Error(fmt::format("@{} does not read tokens: {}, not i32[B,T] beside its targets", g.name,
                              g.args.empty() ? "it has no input"
                                             : fmt::format("its first input %{} is {}",
                                                           g.values[static_cast<size_t>(g.args[0])].name,
                                                           g.arg_types[0].str())));
    if (g.arg_types[0].dims[0].kind() != DimExpr::Kind::symbol)
      throw Error(fmt::format("@{} reads a batch of {} sequences: declare its batch as a dimension (dim B = ...), "
                              "which sampling binds to one sequence",
                              g.name, g.arg_types[0].dims[0].str()));
    m.name = g.name;
  }
  bind_batch(model, 1);
  const Function& g = model.module.graph();
  m.context = g.type_of(g.args[0]).shape[1];
  m.length_dim = shortenable_length(model);
  m.model = std::move(model);

  // The weights are checked against the first program's parameters (the
  // same at every length) before they are bound to it.
  cpu::Executor& forward = *m.program_for(1).forward;
  std::vector<std::pair<std::string, TensorType>> expected;
  for (const std::string& p : forward.param_names()) expected.emplace_back(p, forward.param_type(p));
  check_tensors(weights, expected, what, /*allow_unexpected=*/true);
  // The programs read the weights where they were loaded (no copy of a few
  // hundred megabytes to touch first); the rest (a checkpoint's optimizer
  // state) goes.
  for (const std::string& name : weights.names())
    if (std::none_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; }))
      weights.remove(name);
  m.weights_file = std::move(weights);
  m.weights.reserve(expected.size());
  for (const auto& [p, type] : expected) {
    m.weights.emplace_back(p, m.weights_file.at(p).view<float>().data());
    forward.bind_param(p, m.weights.back().second);
  }
  m.check_causal();
  m.make_decoder();
}

LanguageModel::~LanguageModel() = default;
LanguageModel::LanguageModel(LanguageModel&&) noexcept = default;
LanguageModel& LanguageModel::operator=(LanguageModel&&) noexcept = default;

const std::string& LanguageModel::name() const { return impl_->name; }
int64_t LanguageModel::context() const { return impl_->context; }
int64_t LanguageModel::vocabulary() const { return impl_->vocabulary; }
bool LanguageModel::cached() const { return impl_->decoder && impl_->use_cache; }
const std::string& LanguageModel::why_uncached() const { return impl_->why_uncached; }
void LanguageModel::use_cache(bool on) { impl_->use_cache = on; }

void LanguageModel::check_token(int32_t t) const {
  if (t < 0 || t >= impl_->vocabulary)
    throw Error(fmt::format("token {} is not in @{}'s vocabulary of {} ids", t, impl_->name, impl_->vocabulary));
}

std::span<const float> LanguageModel::next(std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 1 || n > impl_->context)
    throw Error(fmt::format("@{} reads 1 to {} tokens at once, not {}", impl_->name, impl_->context, n));
  for (int32_t t : tokens) check_token(t);
  return impl_->read_whole(tokens);
}

const std::string& LanguageModel::why_not_side_by_side(int64_t samples, int64_t prompts, int64_t max_batch) {
  static const std::string kNone;
  static const std::string kShared =
      "its rotations or attentions do not lead with the batch, so its sequences cannot read positions of their own";
  const int64_t jobs = samples * prompts, width = batch_width(jobs, max_batch);
  if (width < 2 || !cached()) return kNone;
  const Impl::SideBySide& together = impl_->side_by_side_for(width);
  // Sequences at different positions: several prompts, or a sample taking
  // the place of one that ended.
  if (together.decoder && (prompts > 1 || width < jobs) && !together.decoder->per_sequence()) return kShared;
  return together.why_not;
}

std::vector<std::vector<int32_t>> LanguageModel::generate(std::span<const int32_t> prompt, const Generation& what,
                                                          const TokenSink& on_token) {
  return generate(std::vector<std::span<const int32_t>>{prompt}, what, on_token);
}

std::vector<std::vector<int32_t>> LanguageModel::generate(const std::vector<std::span<const int32_t>>& prompts,
                                                          const Generation& what, const TokenSink& on_token) {
  if (prompts.empty()) throw Error("no prompt: give the model at least one to go on from");
  for (std::span<const int32_t> prompt : prompts) {
    if (prompt.empty()) throw Error("the prompt is empty: give the model at least one token to go on from");
    for (int32_t t : prompt) check_token(t);
  }
  if (what.samples < 1) throw Error(fmt::format("{} samples draw nothing: ask for one or more", what.samples));
  if (what.max_batch < 0)
    throw Error(fmt::format("a batch of at most {} sequences decodes nothing: give 1 or more (0: all at once)",
                            what.max_batch));
  for (const std::vector<int32_t>& ids : what.stop) {
    if (ids.empty()) throw Error("a stop sequence is empty: it would end a sample before its first token");
    for (int32_t t : ids) check_token(t);
  }
  const auto count = static_cast<int64_t>(prompts.size());
  const int64_t jobs = count * what.samples, width = batch_width(jobs, what.max_batch);
  if (what.tokens <= 0) return std::vector<std::vector<int32_t>>(static_cast<size_t>(jobs));
  if (!cached()) return impl_->draw(prompts, what, nullptr, on_token);
  if (width > 1 && why_not_side_by_side(what.samples, count, what.max_batch).empty())
    return impl_->draw(prompts, what, impl_->side_by_side_for(width).decoder.get(), on_token);
  // Where the sequences cannot be at different positions, each prompt's
  // samples side by side where they fit in the batch; else one at a time.
  if (what.samples > 1 && what.samples <= width && (count > 1 || width < jobs) &&
      why_not_side_by_side(what.samples).empty()) {
    std::vector<std::vector<int32_t>> out;
    for (int64_t i = 0; i < count; ++i) {
      const TokenSink this_prompt = [&](int64_t s, int32_t token) {
        if (on_token) on_token(i * what.samples + s, token);
      };
      KvCacheDecoder* together = impl_->side_by_side_for(what.samples).decoder.get();
      for (std::vector<int32_t>& tokens : impl_->draw({prompts[static_cast<size_t>(i)]}, what, together, this_prompt))
        out.push_back(std::move(tokens));
    }
    return out;
  }
  return impl_->draw(prompts, what, impl_->decoder.get(), on_token);
}

}  // namespace pf::tools
